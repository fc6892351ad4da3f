"""Warnings on the command line: one line each, each once, skipped files listed once per run folder.

Python prints a warning as ``file:line: UserWarning: message`` plus the source line that raised it; for a user
that source line is noise, and the same warning repeats in ``train``, ``eval`` and ``report`` (each reads the
data again) or once per data loader (PyTorch's "N worker processes ... suggested max" warning). While a command
runs, `WarningLines` replaces ``warnings.showwarning`` (written by hand: the warnings module has no per-message
"once" across call sites and no hook for a one-line format):

- a skipped file (``skipping unreadable image PATH: REASON`` from the datasets) prints as
  ``ssl-toolkit: skipped PATH (REASON)`` once, and goes into the run folder's ``skipped.txt``
  (`ssl_toolkit.run_summary.record_skipped`); a file that list already holds is not printed again, and the
  command ends with one line pointing to the list instead;
- ssl_toolkit's other warnings print as ``ssl-toolkit: warning: MESSAGE``;
- other libraries' warnings keep Python's format, each distinct message once.

Data-loader worker processes inherit the hook (fork), so files found there are listed too. Only the process of
rank 0 prints skipped files (every rank scans the same folder).
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, TextIO

_PACKAGE_DIR = str(Path(__file__).resolve().parent)
# "skipping unreadable image PATH: REASON"; REASON is "ErrorType: text" (a path may hold ": " too)
_SKIP = (
    re.compile(r"^skipping unreadable (?:image|sample) (?P<path>.+?): (?P<reason>[A-Za-z_][\w.]*: .*)$", re.S),
    re.compile(r"^skipping unreadable (?:image|sample) (?P<path>.+?): (?P<reason>.*)$", re.S),
)


class WarningLines:
    """A ``warnings.showwarning`` for one command (a context manager that installs and restores it).

    Args:
        stream: where lines go (default: the current ``sys.stderr``).
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.run_dir: Path | None = None
        self.record = False
        self.seen_messages: set[tuple[str, str]] = set()
        self.seen_paths: set[str] = set()
        self.repeated = 0  # skipped files not printed because the list already held them
        self._previous: Any = None
        self._pid = os.getpid()  # data-loader workers (forked) print plainly: their copies of bars are stale

    def __enter__(self) -> WarningLines:
        self._previous = warnings.catch_warnings()  # restores the filters and showwarning on exit
        self._previous.__enter__()
        warnings.showwarning = self.showwarning
        # every skipped file reaches this hook, which keeps its own list (Python's "default" action would show a
        # file once per process and location, hiding it from a second command run in the same process)
        warnings.filterwarnings("always", message="skipping unreadable ")
        return self

    def __exit__(self, *exc: object) -> None:
        self._previous.__exit__(*exc)
        line = self.closing_line()
        if line:
            self._write(line)

    def use_run(self, run_dir: Path, *, record: bool = True) -> None:
        """List skipped files in ``run_dir/skipped.txt`` (when ``record``) and do not repeat those it holds."""
        self.run_dir, self.record = Path(run_dir), record

    def showwarning(
        self, message: Warning | str, category: type[Warning], filename: str, lineno: int,
        file: TextIO | None = None, line: str | None = None,
    ) -> None:  # fmt: skip
        text = str(message).strip()
        skipped = _SKIP[0].match(text) or _SKIP[1].match(text)
        if skipped:
            self._skipped(skipped["path"], skipped["reason"])
        elif (category.__name__, text) not in self.seen_messages:
            self.seen_messages.add((category.__name__, text))
            if str(Path(filename).resolve()).startswith(_PACKAGE_DIR):
                self._write(f"ssl-toolkit: warning: {text}", file)
            else:
                self._write(warnings.formatwarning(message, category, filename, lineno, "").rstrip(), file)

    def _skipped(self, path: str, reason: str) -> None:
        full = os.path.abspath(path)  # the list holds absolute paths (`record_skipped`)
        if full in self.seen_paths:
            return
        self.seen_paths.add(full)
        if self.run_dir is not None:
            from ssl_toolkit.run_summary import read_skipped, record_skipped

            listed = read_skipped(self.run_dir)
            if full in listed or path in listed:  # listed before, or by a data-loader worker process
                self.repeated += 1
                return
            if self.record and self.run_dir.is_dir():
                record_skipped(self.run_dir, {path: reason})
        if os.environ.get("RANK", "0") == "0":
            self._write(f"ssl-toolkit: skipped {path} ({reason})")

    def closing_line(self) -> str | None:
        """``N skipped files, see RUN/skipped.txt`` when files were not repeated; else None."""
        if not self.repeated or self.run_dir is None:
            return None
        from ssl_toolkit.run_summary import SKIPPED

        n = self.repeated
        return f"ssl-toolkit: {n} skipped file{'' if n == 1 else 's'} not repeated, see {self.run_dir / SKIPPED}"

    def _write(self, line: str, file: TextIO | None = None) -> None:
        stream = file or self.stream or sys.stderr
        try:
            if os.getpid() == self._pid:
                from tqdm import tqdm

                tqdm.write(line, file=stream)  # above a progress bar, not inside it
            else:
                stream.write(line + "\n")
                stream.flush()
        except (OSError, ValueError):  # a closed stream must not turn a warning into a crash
            pass
