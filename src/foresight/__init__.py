"""Foresight: open-source predictive maintenance."""

__version__ = "0.1.0"
