"""Order-flow imbalance trading bot."""

__version__ = "0.1.0"
