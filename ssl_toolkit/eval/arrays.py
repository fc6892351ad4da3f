"""Array inputs of the evaluation functions: numpy arrays and torch tensors alike, checked once.

Every public function of ``ssl_toolkit.eval`` passes its feature and label arguments through `as_tensor`,
so ``rankme(np.ndarray)`` works as ``rankme(torch.Tensor)`` does. numpy arrays are wrapped without a copy
(``torch.as_tensor``); tensors are detached.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ssl_toolkit.errors import ConfigError


def as_tensor(x: Any, name: str, *, ndim: int | None = None) -> Tensor:
    """``x`` as a detached tensor (numpy arrays and nested sequences wrapped, no copy for arrays).

    Args:
        x: a torch tensor, a numpy array, or anything ``np.asarray`` accepts.
        name: what the argument is, for the error message.
        ndim: required number of dimensions, if any.

    Raises:
        ConfigError: not convertible (e.g. object arrays), or not ``ndim``-dimensional.
    """
    if isinstance(x, Tensor):
        t = x.detach()
    else:
        try:
            array = np.asarray(x)
            if array.dtype == object:
                raise TypeError("object arrays are not numeric")
            t = torch.as_tensor(array)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ConfigError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}: {err}") from err
    if ndim is not None and t.ndim != ndim:
        shapes = {1: "(N,)", 2: "(N, D)", 3: "(N, V, D)"}
        raise ConfigError(f"{name} must be {ndim}-D {shapes.get(ndim, '')}, got shape {tuple(t.shape)}")
    return t
