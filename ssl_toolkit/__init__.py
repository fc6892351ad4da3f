"""ssl_toolkit: self-supervised pretraining, label-free evaluation and export of image encoders.

Importing the package is cheap (the command line answers at once); the small-input ResNets
(`ssl_toolkit.small_input`) are registered with timm as soon as timm is imported, before or after this package,
so ``timm.create_model("local-dir:<export>")`` finds them after ``import ssl_toolkit``.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"


class _RegisterWithTimm(importlib.abc.MetaPathFinder):
    """Runs ``import ssl_toolkit.small_input`` right after timm finishes importing (the registration needs timm).

    Written by hand because timm has no plug-in hook for model registration; this finder only wraps timm's
    own loader and removes itself on first use.
    """

    def find_spec(self, name, path, target=None):  # noqa: ANN001 - the MetaPathFinder protocol
        if name != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module) -> None:  # noqa: ANN001
            exec_module(module)
            importlib.import_module("ssl_toolkit.small_input")

        spec.loader.exec_module = exec_then_register  # type: ignore[method-assign]
        return spec


if "timm" in sys.modules:
    importlib.import_module("ssl_toolkit.small_input")
elif not any(isinstance(f, _RegisterWithTimm) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWithTimm())
