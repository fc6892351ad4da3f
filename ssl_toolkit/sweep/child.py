"""Start a trial's ``ssl-toolkit`` command so that it stops when the sweep that started it dies.

    python -m ssl_toolkit.sweep.child PARENT_PID train RECIPE key=value ...

On Linux this asks the kernel to send the process SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``),
then replaces itself with ``python -m ssl_toolkit ...`` (``execv`` keeps that setting). A sweep killed with
``kill -9`` therefore does not leave its trial training on: the trial gets SIGTERM, saves a checkpoint and exits
(``ssl_toolkit.interrupts``), and the rerun sweep resumes it from there. Done here, in the child, rather than
with ``subprocess``'s ``preexec_fn``, which is unsafe in a parent with threads (Optuna's heartbeat thread).
Elsewhere than Linux the command just runs; a killed sweep's trial then finishes on its own.
"""

from __future__ import annotations

import os
import signal
import sys

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


def main(argv: list[str]) -> None:
    parent_pid, command = int(argv[0]), argv[1:]
    die_with_parent(parent_pid)
    os.execv(sys.executable, [sys.executable, "-m", "ssl_toolkit", *command])


if __name__ == "__main__":
    main(sys.argv[1:])
