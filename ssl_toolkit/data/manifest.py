"""Reading a bank's manifest: one JSON line per generated variant, in per-process shards or merged.

The format (``FIELDS`` and their types) and the reader live here in the data package, which reads banks in
training; ``ssl_toolkit.generation.manifest`` writes and merges them and imports the format from here, so the
two packages depend one way only. Each process of ``generate-views`` appends to its own
``manifest.shard-<rank>-of-<world>.jsonl``; merging folds them into ``manifest.jsonl``. A row is keyed by
``(src_id, variant_id)``: unconditional samples have ``src_id`` -1 and their sample index as ``variant_id``.
Hand-written because the format is ours: plain JSON Lines readable without this code.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

from ssl_toolkit.errors import DataError

MANIFEST = "manifest.jsonl"
FIELDS = (
    "src_id", "src_path", "variant_id", "label", "file", "pipeline", "generator", "model_path", "model_revision",
    "scheduler", "steps", "guidance", "noise_level", "fg_ratio", "strength", "prompt", "seed", "width", "height",
    "diffusers_version", "sha256",
)  # fmt: skip
_INT, _FLOAT, _STR = (int,), (int, float), (str,)
FIELD_TYPES: dict[str, tuple[tuple[type, ...], bool]] = {  # field -> (accepted types, may be null)
    "src_id": (_INT, False), "src_path": (_STR, False), "variant_id": (_INT, False), "label": (_INT, False),
    "file": (_STR, False), "pipeline": (_STR, False), "generator": (_STR, False), "model_path": (_STR, False),
    "model_revision": (_STR, False), "scheduler": (_STR, False), "steps": (_INT, False), "guidance": (_FLOAT, True),
    "noise_level": (_INT, True), "fg_ratio": (_FLOAT, True), "strength": (_FLOAT, True), "prompt": (_STR, True),
    "seed": (_INT, False), "width": (_INT, False), "height": (_INT, False), "diffusers_version": (_STR, False),
    "sha256": (_STR, False),
}  # fmt: skip
# The settings every row of one bank must share; a bank mixing them cannot say how its images were made.
SETTING_FIELDS = ("generator", "pipeline", "model_revision")
_SHARD = re.compile(r"^manifest\.shard-(\d+)-of-(\d+)\.jsonl$")


def shard_name(rank: int, world: int) -> str:
    """File name of the manifest shard written by process ``rank`` of ``world``."""
    return f"manifest.shard-{rank}-of-{world}.jsonl"


def row_key(row: dict) -> tuple[int, int]:
    """The identity (and sort key) of a row: ``(src_id, variant_id)``."""
    return int(row["src_id"]), int(row["variant_id"])


def validate_row(row: dict) -> None:
    """Raise DataError unless ``row`` has exactly ``FIELDS``, each of its type (or null where allowed)."""
    if set(row) != set(FIELDS):
        raise DataError(f"manifest row fields differ from the format's {FIELDS}: {sorted(set(row) ^ set(FIELDS))}")
    for name, (types, nullable) in FIELD_TYPES.items():
        value = row[name]
        ok = (value is None and nullable) or (isinstance(value, types) and not isinstance(value, bool))
        if not ok:
            raise DataError(f"manifest field {name}={value!r} is not {'/'.join(t.__name__ for t in types)}")


def _read_jsonl(path: Path) -> list[dict]:
    """Rows of one file; a torn last line (a crash mid-write) is dropped with a warning, other bad lines raise."""
    text = path.read_text()
    lines = text.split("\n")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines):  # no newline after it: the write was interrupted
                warnings.warn(f"{path}: dropping an incomplete last line (interrupted write)", stacklevel=3)
                continue
            raise DataError(f"{path}:{number} is not valid JSON ({err}); fix or delete that line") from err
    return rows


def shard_files(bank: str | Path) -> list[tuple[Path, int, int]]:
    """``(path, rank, world)`` of every manifest shard in ``bank``, sorted by world then rank."""
    found = []
    for path in Path(bank).glob("manifest.shard-*-of-*.jsonl"):
        m = _SHARD.match(path.name)
        if m:
            found.append((path, int(m.group(1)), int(m.group(2))))
    return sorted(found, key=lambda t: (t[2], t[1]))


def _check_settings(rows: list[dict], bank: Path) -> None:
    seen: dict[tuple, dict] = {}
    for row in rows:
        seen.setdefault(tuple(row.get(k) for k in SETTING_FIELDS), row)
    if len(seen) > 1:
        a, b = list(seen.values())[:2]
        desc = "; ".join(f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in SETTING_FIELDS if a.get(k) != b.get(k))
        raise DataError(
            f"the bank {bank} mixes generation settings ({desc}, e.g. rows for {a.get('file')} and {b.get('file')}); "
            "generate with other settings into a different --out, or delete the rows (and images) of one setting"
        )


def _dedupe(rows: list[dict], bank: Path) -> list[dict]:
    """One row per key; identical duplicates collapse, differing ones keep the row matching the file on disk."""
    import hashlib

    by_key: dict[tuple[int, int], dict] = {}
    for row in rows:
        key = row_key(row)
        old = by_key.get(key)
        if old is None or old.get("sha256") == row.get("sha256"):
            by_key.setdefault(key, row)
            continue
        path = bank / str(row["file"])
        actual = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        keep = [r for r in (old, row) if r.get("sha256") == actual]
        if not keep:
            raise DataError(
                f"the bank {bank} has two rows for source {key[0]} variant {key[1]} with different sha256, and "
                f"neither matches {path}; delete that file and rerun generate-views to regenerate it"
            )
        by_key[key] = keep[0]
    return [by_key[k] for k in sorted(by_key)]


def read_manifest(bank: str | Path) -> list[dict]:
    """Every row of a bank, sorted by ``(src_id, variant_id)``: ``manifest.jsonl`` plus any shard not merged yet.

    Raises:
        DataError: a malformed line, conflicting duplicate rows, or rows with different generation settings.
    """
    bank = Path(bank)
    rows = _read_jsonl(bank / MANIFEST) if (bank / MANIFEST).is_file() else []
    for path, _, _ in shard_files(bank):
        rows += _read_jsonl(path)
    rows = _dedupe(rows, bank)
    _check_settings(rows, bank)
    return rows
