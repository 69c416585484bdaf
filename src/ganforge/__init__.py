"""ganforge: train, judge and use GANs."""

__version__ = "0.1.0"
