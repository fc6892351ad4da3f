"""Hyper-parameter sweeps on Optuna, chosen by label-free metrics (``ssl-toolkit sweep``; docs/sweep.md).

Modules: ``space`` (the ``--param`` search space, checked against the recipe), ``trial`` (one trial: overrides, a
child process, its metrics), ``child`` (how that process dies with its sweep), ``study`` (storage, definition,
resuming), ``runner`` (`run_sweep`), ``agreement`` (selection scores, Spearman and k-NN gaps), ``outputs``
(winner.yaml, tables, plot, page) and ``cli`` (``add_parser``). Importing this package imports nothing heavy, so
``python -m ssl_toolkit.sweep.child`` and the command line's ``--help`` start at once; Optuna is imported by the
modules that use it (install ``ssl-toolkit[optuna]``).
"""

from __future__ import annotations
