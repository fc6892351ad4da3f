"""Shared test helpers: where the reference values live, and small fixtures."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO.parent / "shared" / "reference"


@cache
def _load(name: str) -> dict:
    return json.loads((REFERENCE_DIR / name).read_text())


def reference(name: str) -> dict:
    """Load a JSON file from ``../shared/reference``; skip the test when it is not beside the checkout."""
    if not (REFERENCE_DIR / name).is_file():
        pytest.skip(f"reference file {name} not found in {REFERENCE_DIR}")
    return _load(name)
