"""The manifest of a bank of generated views: one JSON line per variant, written per process and merged.

Each process appends to its own ``manifest.shard-<rank>-of-<world>.jsonl`` (flushed and fsynced per batch,
so a crash loses at most the batch in flight) and drops a ``.done`` marker beside it when its share is
finished; merging folds every shard, and any earlier ``manifest.jsonl``, into one ``manifest.jsonl`` sorted
by ``(src_id, variant_id)`` and removes the merged shards. A row is keyed by ``(src_id, variant_id)``:
unconditional samples have ``src_id`` -1 and their sample index as ``variant_id``, so keys stay unique and
they sort by index. Hand-written because the format is ours: plain JSON Lines readable without this code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ssl_toolkit.data.manifest import (  # noqa: F401  (the format, re-exported for the writers)
    FIELD_TYPES,
    FIELDS,
    MANIFEST,
    SETTING_FIELDS,
    read_manifest,
    row_key,
    shard_files,
    shard_name,
    validate_row,
)
from ssl_toolkit.errors import DataError


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``path``, fsync it, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def incomplete_shards(bank: str | Path) -> list[str]:
    """Names of the shards (present or missing) of every world seen in ``bank`` that have no ``.done`` marker."""
    bank = Path(bank)
    worlds = {world for _, _, world in shard_files(bank)}
    return [
        shard_name(rank, world)
        for world in sorted(worlds)
        for rank in range(world)
        if not (bank / (shard_name(rank, world) + ".done")).is_file()
    ]


def merge_manifests(bank: str | Path, *, require_complete: bool = True) -> Path:
    """Fold every shard (and an existing ``manifest.jsonl``) into ``manifest.jsonl``; remove merged shards.

    Args:
        bank: the bank folder.
        require_complete: refuse while a shard of some world has not finished (no ``.done`` marker).

    Raises:
        DataError: unfinished shards, malformed or conflicting rows, or mixed generation settings.
    """
    bank = Path(bank)
    if not bank.is_dir():
        raise DataError(f"bank folder {bank} does not exist; check --out")
    missing = incomplete_shards(bank)
    if require_complete and missing:
        raise DataError(
            f"cannot merge {bank}: {len(missing)} shard(s) not finished: {', '.join(missing[:8])}; run them "
            "(generate-views with the same arguments and --num-shards W --shard-index R) and merge again"
        )
    shards = shard_files(bank)
    rows = read_manifest(bank)
    write_atomic(bank / MANIFEST, "".join(json.dumps(r) + "\n" for r in rows).encode())
    for path, _, _ in shards:
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".done").unlink(missing_ok=True)
    return bank / MANIFEST


class ShardWriter:
    """Appends rows to this process's shard, fsynced per batch; ``finish`` marks the shard as complete.

    Opening removes the shard's ``.done`` marker (new rows are coming) and trims a torn last line left by a
    crash, so appended rows always start on a line of their own.
    """

    def __init__(self, bank: str | Path, rank: int, world: int) -> None:
        self.path = Path(bank) / shard_name(rank, world)
        self.done = self.path.with_name(self.path.name + ".done")
        self.done.unlink(missing_ok=True)
        if self.path.is_file():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                write_atomic(self.path, data[: data.rfind(b"\n") + 1])
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by finish/close
        self.rows = 0

    def write(self, rows: list[dict]) -> None:
        """Append ``rows`` and make them durable before returning."""
        for row in rows:
            self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.rows += len(rows)

    def finish(self) -> None:
        """Close the shard and write its ``.done`` marker."""
        self.close()
        write_atomic(self.done, json.dumps({"rows_this_run": self.rows}).encode())

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
