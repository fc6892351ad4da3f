"""Stop cleanly on SIGTERM/SIGINT (SLURM preemption, Ctrl-C): finish the step, checkpoint, exit resumable.

While training, the two signals set a flag instead of killing the process; the loop checks it at every step
boundary (agreed across processes, so every rank stops after the same step), saves a checkpoint and raises
`Interrupted`, whose exit code is the shell's usual 128 + signal number. DataLoader workers ignore both
signals (`ignore_in_worker`), so a terminal's Ctrl-C, which reaches the whole process group, cannot kill a
worker mid-batch; they end with the main process. A second signal while stopping is not caught again: the
default handler ends the process at once (the last checkpoint is still intact).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import torch

from ssl_toolkit.errors import TrainingStopped

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(TrainingStopped):
    """Training stopped on a signal after saving a checkpoint; rerunning the same command resumes."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


def ignore_in_worker(_worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: leave SIGINT/SIGTERM to the main process."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class StopRequests:
    """Catches SIGINT/SIGTERM while active (a context manager); ``requested()`` says whether to stop now."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.signum = signum
        for sig, handler in self._previous.items():  # a second signal acts at once
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():  # signals can only be caught there
            self._previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous = {}

    def requested(self, accelerator) -> int:  # noqa: ANN001 - accelerate.Accelerator
        """The signal to stop for (0: none), the largest over processes so that all stop together."""
        if accelerator.num_processes == 1:
            return self.signum
        flag = torch.tensor([self.signum], device=accelerator.device)
        return int(accelerator.gather(flag).max().item())
