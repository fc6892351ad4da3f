"""Self-supervised objectives behind one interface, and the registry that builds them by name.

Adding an objective: its file, one line in `OBJECTIVES` (`registry.py`), its recipe and, at most, one test of
what is specific to it; the contract test (tests/objectives/test_contract.py) covers it automatically. The
engine never changes.
"""

from __future__ import annotations

from ssl_toolkit.objectives.base import LossOutput, Objective, StepContext
from ssl_toolkit.objectives.facts import FACTS, builder_facts
from ssl_toolkit.objectives.registry import (
    ENTRY_POINT_GROUP,
    OBJECTIVES,
    REQUIRED,
    build_objective,
    check_objective,
    objective_kwargs,
    resolve_objective,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "FACTS",
    "OBJECTIVES",
    "REQUIRED",
    "LossOutput",
    "Objective",
    "StepContext",
    "build_objective",
    "builder_facts",
    "check_objective",
    "objective_kwargs",
    "resolve_objective",
]
