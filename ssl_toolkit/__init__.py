"""ssl_toolkit: self-supervised pretraining, label-free evaluation and export of image encoders."""

__version__ = "0.1.0"
