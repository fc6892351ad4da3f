"""Command line: ``ssl-toolkit train | eval | export | report | list | generate-views | fit-foreground-pca | pack``.

``python -m ssl_toolkit ...`` is the same. Recipe problems exit with status 2 and one line naming the problem
and the fix; a run that stops on a NaN loss or a signal exits with status 1 (or 128 + signal) and says why.

Each sub-command lives in a ``cli_*`` module with an ``add_parser(sub)`` function that adds it; `SUBCOMMANDS`
lists them, so a new command is one line there (e.g. ``"ssl_toolkit.sweep.cli:add_parser"``). Building the parser
imports no torch: ``--help``, ``--version``, ``list`` (but ``list objectives``) and recipe errors answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ssl_toolkit import __version__

# "module:function" adding one or more sub-commands, in the order ``--help`` shows them
SUBCOMMANDS = (
    "ssl_toolkit.cli_train:add_parser",
    "ssl_toolkit.cli_runs:add_parser",
    "ssl_toolkit.cli_list:add_parser",
    "ssl_toolkit.cli_tools:add_parser",
    "ssl_toolkit.sweep.cli:add_parser",
)

EPILOG = """\
start here:
  ssl-toolkit list recipes                                  the recipes that ship with the package
  ssl-toolkit train simclr_fashion_mnist --print-config     the resolved recipe, nothing run
  ssl-toolkit train simclr_fashion_mnist train.epochs=1     pretrain, export, evaluate, report
  ssl-toolkit train --help                                  recipe sections and their most used keys

docs (in the source repository): docs/cli.md, docs/data.md, docs/objectives.md, docs/evaluation.md"""


def build_parser() -> argparse.ArgumentParser:
    """The ``ssl-toolkit`` parser with every sub-command of `SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="ssl-toolkit",
        description="Self-supervised pretraining, label-free checks and export of image encoders.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ssl-toolkit {__version__}",
                        help="print the version and exit")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    for entry in SUBCOMMANDS:
        module, _, function = entry.partition(":")
        getattr(importlib.import_module(module), function)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (0 done, 1 stopped, 2 bad input)."""
    from ssl_toolkit.cli_warnings import WarningLines
    from ssl_toolkit.errors import ConfigError, TrainingStopped

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and not any(e.startswith("-") for e in extra):
        args.overrides += extra  # key=value after an option (train RECIPE --print-config a=b)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    with WarningLines() as warning_lines:
        args.warning_lines = warning_lines
        try:
            return args.func(args)
        except ConfigError as err:
            print(f"ssl-toolkit: error: {err}", file=sys.stderr)
            return 2
        except TrainingStopped as err:
            print(f"ssl-toolkit: stopped: {err}", file=sys.stderr)
            return getattr(err, "exit_code", 1)


if __name__ == "__main__":
    sys.exit(main())
