"""Write the GPU check's results: ``gpu_check.json`` (everything) and ``gpu_check.md`` (tables for RESULTS.md).

A section's record holds ``status`` (ok, partial, failed, skipped, not_available), ``seconds``, optional
``reason``/``error``/``traceback``, ``notes`` (lines) and ``tables`` (``{title: [row dicts]}``); other keys
go to the JSON only. The Markdown uses level-3 and level-4 headings so that it pastes under the
"GPU check" section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

PACKAGES_SHOWN = ("torch", "torchvision", "timm", "accelerate", "lightly", "kornia", "omegaconf", "diffsort")


def fmt(value: Any) -> str:
    """One table cell: floats to 4 significant digits, lists joined, None as a dash, pipes escaped."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    """A Markdown table whose columns are the union of the rows' keys, in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return lines


def _header(doc: dict[str, Any]) -> list[str]:
    meta = doc["meta"]
    where = meta["gpu"] or f"CPU only ({meta['cpu_count']} cores, {meta['torch_threads']} torch threads)"
    versions = ", ".join(f"{name} {meta['packages'].get(name) or 'absent'}" for name in PACKAGES_SHOWN)
    lines = [
        f"### GPU check: {where}, {meta['date_utc']} UTC",
        "",
        f"Device `{meta['device']}`"
        + (f" ({meta['gpu_memory_gib']} GiB), CUDA {meta['cuda']}, cuDNN {meta['cudnn']}" if meta["gpu"] else "")
        + f"; Python {meta['python']}, {meta['cpu_count']} CPU cores; {versions}; "
        f"float32 matmul precision `{meta['float32_matmul_precision']}`; commit {meta['git_commit'] or 'unknown'}.",
    ]
    if "total_s" in doc:
        lines[-1] += f" Total {doc['total_s']:.0f} s of a {doc['budget_s']:.0f} s budget."
    return lines


def markdown(doc: dict[str, Any]) -> str:
    """The whole results document as Markdown."""
    lines = _header(doc)
    for name, record in doc["sections"].items():
        took = f" ({record['seconds']:.0f} s)" if "seconds" in record else ""
        lines += ["", f"#### {name}: {record['status']}{took}"]
        if record.get("reason"):
            lines += ["", str(record["reason"])]
        if record.get("error"):
            lines += ["", f"Error: `{fmt(record['error'])[:300]}` (traceback in gpu_check.json)."]
        if record.get("notes"):
            lines += [""] + [f"- {note}" for note in record["notes"]]
        for title, rows in (record.get("tables") or {}).items():
            if rows:
                lines += ["", f"{title}:", ""] + markdown_table(rows)
    return "\n".join(lines) + "\n"


def write_outputs(out_dir: Path, doc: dict[str, Any]) -> None:
    """(Re)write ``gpu_check.json`` and ``gpu_check.md`` in ``out_dir``."""
    (out_dir / "gpu_check.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    (out_dir / "gpu_check.md").write_text(markdown(doc))
