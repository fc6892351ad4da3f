"""Generation settings: which knobs each generator kind takes, their defaults, and their checks.

Hand-written because the knobs mean different things per pipeline and must not be conflated (spec §3.5):
unCLIP ``noise_level`` (0..999) is noise on the CLIP image *embedding*, SDEdit ``strength`` (0, 1] is the
fraction of the schedule re-noised in *latent or pixel* space. A knob given to a kind that ignores it is an
error rather than silently dropped, so the manifest never records a setting that had no effect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ssl_toolkit.errors import ConfigError

# Defaults per kind; a knob absent from a kind's entry does not apply to it. unclip follows GenView's release
# script (20 steps, guidance 10); the SD-family defaults are diffusers' own.
DEFAULTS: dict[str, dict[str, object]] = {
    "unclip": {"steps": 20, "guidance": 10.0, "noise_level": 0, "prompt": ""},
    "variation": {"steps": 50, "guidance": 7.5},
    "img2img": {"steps": 50, "guidance": 7.5, "strength": 0.5, "prompt": ""},
    "pixel_img2img": {"steps": 50, "strength": 0.5},
    "unconditional": {"steps": 50},
}
SCORERS = ("saliency", "clip_pca")
_FLAGS = {"guidance": "--guidance", "noise_level": "--noise-level", "strength": "--strength", "prompt": "--prompt"}
_HINTS = {
    "strength": "strength is SDEdit latent noise; unCLIP takes --noise-level (embedding noise, 0..999)",
    "noise_level": "noise level is unCLIP embedding noise; SDEdit kinds take --strength (latent noise, (0, 1])",
}


@dataclass(frozen=True)
class GenSettings:
    """Resolved generation settings; None marks a knob that does not apply to ``kind``.

    ``noise_level`` is an int in [0, 999] or ``"adaptive"`` (per-image level from a foreground scorer).
    """

    kind: str
    steps: int
    guidance: float | None = None
    noise_level: int | str | None = None
    strength: float | None = None
    prompt: str | None = None
    scorer: str | None = None

    @property
    def adaptive(self) -> bool:
        return self.noise_level == "adaptive"

    @property
    def needs_source(self) -> bool:
        return self.kind != "unconditional"

    @property
    def pixel(self) -> bool:
        return self.kind in ("pixel_img2img", "unconditional")


def _noise_level(value: object) -> int | str:
    if isinstance(value, str) and value.strip().lower() == "adaptive":
        return "adaptive"
    try:
        level = int(str(value).strip()) if isinstance(value, str) else int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ConfigError(f"--noise-level {value!r} is neither an integer in [0, 999] nor 'adaptive'") from None
    if not 0 <= level <= 999 or (isinstance(value, float) and value != level):
        raise ConfigError(f"--noise-level must be an integer in [0, 999] (unCLIP embedding noise), got {value!r}")
    return level


def resolve_settings(
    kind: str,
    *,
    steps: int | None = None,
    guidance: float | None = None,
    noise_level: int | str | None = None,
    strength: float | None = None,
    prompt: str | None = None,
    scorer: str | None = None,
) -> GenSettings:
    """Check the knobs given for ``kind`` and fill in its defaults; None means "not given".

    Raises:
        ConfigError: unknown kind or scorer, a knob that does not apply to the kind, or a value out of range.
    """
    if kind not in DEFAULTS:
        raise ConfigError(f"unknown generator {kind!r}; accepted: {', '.join(DEFAULTS)}")
    accepted = DEFAULTS[kind]
    given = {"guidance": guidance, "noise_level": noise_level, "strength": strength, "prompt": prompt}
    for key, value in given.items():
        if value is not None and key not in accepted:
            takes = ", ".join(_FLAGS[k] for k in accepted if k in _FLAGS) or "only --steps"
            hint = f" ({_HINTS[key]})" if key in _HINTS else ""
            raise ConfigError(f"{_FLAGS[key]} does not apply to --generator {kind}{hint}; {kind} takes {takes}")
    values = {k: (given[k] if given.get(k) is not None else v) for k, v in accepted.items() if k != "steps"}
    n_steps = accepted["steps"] if steps is None else steps
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ConfigError(f"--steps must be a positive integer, got {n_steps!r}")
    if "guidance" in values:
        g = float(values["guidance"])  # type: ignore[arg-type]
        if not math.isfinite(g) or g < 0:
            raise ConfigError(f"--guidance must be a finite number >= 0 (1 or less disables it), got {g}")
        values["guidance"] = g
    if "noise_level" in values:
        values["noise_level"] = _noise_level(values["noise_level"])
    if "strength" in values:
        s = float(values["strength"])  # type: ignore[arg-type]
        if not 0.0 < s <= 1.0:
            raise ConfigError(f"--strength must be in (0, 1] (fraction of the schedule re-noised), got {s}")
        if int(n_steps * s) < 1:
            raise ConfigError(
                f"--strength {s} with --steps {n_steps} leaves no denoising step (int(steps*strength) = 0); "
                "raise --strength or --steps"
            )
        values["strength"] = s
    if values.get("noise_level") == "adaptive":
        scorer = scorer or "clip_pca"
        if scorer not in SCORERS:
            raise ConfigError(f"--scorer {scorer!r} is unknown; accepted: {', '.join(SCORERS)}")
    elif scorer is not None:
        raise ConfigError("--scorer only applies with --generator unclip --noise-level adaptive")
    return GenSettings(kind=kind, steps=int(n_steps), scorer=scorer, **values)  # type: ignore[arg-type]
