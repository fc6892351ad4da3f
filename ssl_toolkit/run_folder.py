"""The run folder of a recipe: where it is and what it holds.

``<train.output_dir>/<train.run_name or name>/`` holds ``recipe.yaml`` (the resolved recipe it started with, and
``recipe.resumed-<step>.yaml`` for each resume that changed an allowed key), ``metrics.csv``, ``tensorboard/``,
``checkpoints/`` and, at the end, the exported ``encoder/``. One process writes a run folder at a time
(`RunLock`), and a resume is compared with the recipe the run used before anything is written (`check_resume`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssl_toolkit.errors import ConfigError

RECIPE = "recipe.yaml"
CHECKPOINTS = "checkpoints"
ENCODER = "encoder"


def run_dir_of(cfg: Any) -> Path:
    """The run folder of a loaded recipe."""
    return Path(cfg.train.output_dir) / (cfg.train.run_name or cfg.name)


# Keys a resumed run may change. Cadence, length, evaluation and monitoring are written down and applied; the
# optimisation trajectory keys are applied with a warning (the way out of a divergence: lower the lr and resume);
# every other key (model, objective, data, views, batch size, seed, optimizer type) would corrupt the run.
SAFE_ON_RESUME = (
    "train.epochs", "train.max_steps", "train.save_every", "train.log_every", "train.keep_checkpoints",
    "train.progress_bar", "train.resume", "train.cpu", "train.log_with", "data.num_workers", "eval.", "monitor.",
)  # fmt: skip
TRAJECTORY_ON_RESUME = (
    "train.lr", "train.weight_decay", "train.momentum", "train.warmup_steps", "train.warmup_fraction",
    "train.min_lr_ratio", "train.grad_clip", "train.mixed_precision", "train.channels_last", "train.compile",
)  # fmt: skip


_FOLDER_KEYS = ("name", "train.run_name", "train.output_dir")  # they name the folder: equal by construction


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b.c": value}`` for a nested mapping; list items are keyed by position (``views.0.size``), so a
    change names the one value that changed, as an override would set it."""
    if isinstance(node, list) and node:
        node = {str(i): item for i, item in enumerate(node)}
    if not isinstance(node, dict) or not node:
        return {prefix.rstrip("."): node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_flat(value, f"{prefix}{key}."))
    return out


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET = _Unset()


def recipe_changes(saved: dict, new: dict) -> tuple[list[str], list[str]]:
    """``(allowed, refused)`` lines ``key: old -> new`` between two resolved recipes (as plain dicts)."""
    old_flat, new_flat = _flat(saved), _flat(new)
    allowed, refused = [], []
    for key in sorted(set(old_flat) | set(new_flat)):
        old, value = old_flat.get(key, _UNSET), new_flat.get(key, _UNSET)
        if old == value:
            continue
        line = f"{key}: {old!r} -> {value!r}"
        ok = key.startswith(SAFE_ON_RESUME + TRAJECTORY_ON_RESUME) or key in (
            "name",
            "train.run_name",
            "train.output_dir",
        )
        (allowed if ok else refused).append(line)
    return allowed, refused


def current_recipe(run_dir: Path) -> Path:
    """The recipe the run's newest part ran with: the last ``recipe.resumed-<step>.yaml``, else ``recipe.yaml``."""
    resumed = sorted(run_dir.glob("recipe.resumed-*.yaml"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    return resumed[-1] if resumed else run_dir / RECIPE


def read_recipe_data(path: Path) -> dict:
    """A saved recipe as plain data (YAML only: nothing in it is imported, built or called)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read {path}: {err}; is the run folder damaged?") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a recipe (a YAML mapping); is the run folder damaged?")
    return data


def check_resume(new: dict, run_dir: Path, step: int) -> list[str]:
    """Compare the recipe of a resume with the one the run used so far, before anything is written.

    Returns:
        The allowed changes (``key: old -> new``), to log and record.

    Raises:
        ConfigError: a change that does not fit the checkpoint, listing every such key with old -> new.
    """
    saved_path = current_recipe(run_dir)
    if not saved_path.is_file():
        return []
    allowed, refused = recipe_changes(read_recipe_data(saved_path), new)
    if refused:
        raise ConfigError(
            f"cannot resume {run_dir} at step {step} with a changed recipe: {'; '.join(refused)}. Restore these "
            "values, or start a new run with train.run_name=<new name>"
        )
    return allowed


@dataclass
class OpenRun:
    """A run folder opened for training: its lock (main process) and the checkpoint to resume from."""

    run_dir: Path
    ckpt_dir: Path
    resume_from: Path | None
    lock: Any = None

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()


def open_for_training(cfg: Any, *, main: bool) -> OpenRun:
    """Lock the run folder (main process), check a resume against the saved recipe, then write the recipe.

    Nothing is written before the lock is held and the resume is known to fit: a refused resume leaves the
    folder exactly as it was.

    Raises:
        ConfigError: the folder is in use, the resume changes a key the checkpoint cannot take, or the folder
            holds checkpoints while ``train.resume`` is false.
    """
    from omegaconf import OmegaConf

    from ssl_toolkit.checkpoint import clean_stale, last_checkpoint, step_of
    from ssl_toolkit.config import save_resolved
    from ssl_toolkit.run_lock import RunLock

    run_dir = run_dir_of(cfg)
    ckpt_dir = run_dir / CHECKPOINTS
    lock = RunLock(run_dir).acquire() if main else None
    opened = OpenRun(run_dir, ckpt_dir, None, lock)
    try:
        last = last_checkpoint(ckpt_dir)
        if last is not None and not cfg.train.resume:
            raise ConfigError(
                f"{run_dir} already holds checkpoints up to step {step_of(last)}; resume with train.resume=true, "
                "or start a new run with train.run_name=<new name>"
            )
        changes = check_resume(OmegaConf.to_container(cfg, resolve=True), run_dir, step_of(last)) if last else []
        if main:
            target = run_dir / (f"recipe.resumed-{step_of(last)}.yaml" if last and changes else RECIPE)
            if last is None or changes:
                save_resolved(cfg, target)
            for line in changes:
                print(f"resume: {line} (recorded in {target.name})")
            clean_stale(ckpt_dir)
        opened.resume_from = last
        return opened
    except BaseException:
        opened.close()
        raise
