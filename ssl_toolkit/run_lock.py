"""One writer per run folder: an OS file lock (the ``filelock`` library) held for the whole run.

The lock is ``<run>/.lock``, taken before anything else is written; ``<run>/.lock.holder.json`` says who holds
it (host, pid, start time, command), so a second writer is told whom it is waiting for. The lock is an
``flock``/``fcntl`` lock, which the operating system releases when its process dies: a run killed with
``kill -9`` does not block the next one, and the holder file it leaves behind is simply overwritten.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from ssl_toolkit.errors import ConfigError

LOCK, HOLDER = ".lock", ".lock.holder.json"


class RunLock:
    """Exclusive lock of a run folder (a context manager too).

    Args:
        run_dir: the run folder (created if missing).
        what: what the holder is doing, for the message a second writer gets (e.g. "train").
    """

    def __init__(self, run_dir: str | Path, *, what: str = "train") -> None:
        from filelock import FileLock

        self.run_dir = Path(run_dir)
        self.what = what
        self._lock = FileLock(str(self.run_dir / LOCK))

    def acquire(self) -> RunLock:
        """Take the lock at once or raise `ConfigError` naming the holder."""
        from filelock import Timeout

        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise ConfigError(
                f"the run folder {self.run_dir} is in use by {self._holder()}; wait for it to finish, or use "
                "another train.run_name"
            ) from None
        holder = {
            "host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "what": self.what, "command": " ".join(sys.argv),
        }  # fmt: skip
        (self.run_dir / HOLDER).write_text(json.dumps(holder) + "\n")
        return self

    def _holder(self) -> str:
        try:
            h = json.loads((self.run_dir / HOLDER).read_text())
            return f"{h['what']} (pid {h['pid']} on {h['host']}, since {h['since']}: {h['command']})"
        except (OSError, ValueError, KeyError):
            return "another process"

    def release(self) -> None:
        if self._lock.is_locked:
            (self.run_dir / HOLDER).unlink(missing_ok=True)
            self._lock.release()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
