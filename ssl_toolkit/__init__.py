"""ssl_toolkit: self-supervised pretraining, label-free evaluation and export of image encoders."""

__version__ = "0.1.0"

from ssl_toolkit import small_input as _register_small_input_resnets  # noqa: E402,F401  (timm models)
