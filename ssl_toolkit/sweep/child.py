"""Run a trial's ``ssl-toolkit`` command under a small supervisor that stops it when the sweep dies.

    python -m ssl_toolkit.sweep.child PARENT_PID train RECIPE key=value ...

The supervisor (this module: a plain Python process, no torch) asks the kernel for SIGTERM when the sweep that
started it dies (Linux ``prctl(PR_SET_PDEATHSIG)``), starts ``python -m ssl_toolkit ...`` and waits for it. It
passes the *first* SIGTERM or SIGINT it receives on to the command, once, and ignores any later one. A sweep
killed with ``kill -9`` therefore does not leave its trial training on: the trial gets one SIGTERM, saves a
checkpoint and exits (``ssl_toolkit.interrupts``), and the rerun sweep resumes it from there. The supervisor
exits with the command's exit code (128 + n when a signal n ended it).

Why not set the parent-death signal on the training process itself: the kernel sends it each time the process
is handed to a new parent, and a dying multi-threaded sweep hands its children from thread to thread before
init takes them, so a trial would get several SIGTERMs, and the second one ends it at once, without its
checkpoint (the engine treats a second signal as "stop now"). Nor with ``subprocess``'s ``preexec_fn``, which
is unsafe in a parent with threads (Optuna's heartbeat thread). Elsewhere than Linux there is no parent-death
signal: a killed sweep's trial then finishes on its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import FrameType

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int) -> None:
    """SIGTERM to this process when ``parent_pid`` exits (Linux); exit at once if it already has."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the request was in place
        sys.exit(128 + signal.SIGTERM)


class _ForwardOnce:
    """Signal handler: the first SIGTERM/SIGINT goes to the command (as soon as it has started); later ones are
    dropped. Handlers run between bytecodes of the main thread, so ``signum`` and ``sent`` change atomically."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.signum = 0
        self.sent = False

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        if self.signum:
            return
        self.signum = signum
        self._send()

    def _send(self) -> None:
        if self.proc is not None and self.signum and not self.sent:
            self.sent = True
            self.proc.send_signal(self.signum)

    def started(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self._send()  # a signal that came while the command was starting


def main(argv: list[str]) -> int:
    parent_pid, command = int(argv[0]), argv[1:]
    forward = _ForwardOnce()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    die_with_parent(parent_pid)
    forward.started(subprocess.Popen([sys.executable, "-m", "ssl_toolkit", *command]))
    code = forward.proc.wait()
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
