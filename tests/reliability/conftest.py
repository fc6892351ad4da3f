"""In-process runs share accelerate's process-wide state; each test starts from a clean one."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
