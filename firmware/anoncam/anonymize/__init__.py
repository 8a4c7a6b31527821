"""Anonymizers applied through a feathered face mask, and static privacy zones."""
from .apply import Anonymizer

__all__ = ["Anonymizer"]
