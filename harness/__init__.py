"""Batch replay and load-benchmark harness for Anthropic's Claude models."""

__version__ = "0.1.0"
__all__ = ["__version__"]
