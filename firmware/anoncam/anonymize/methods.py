"""The registry of covering methods by name: blur, pixelate, solid (cover.py) and generative."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .cover import blur, pixelate, solid
from .generative import GENERATIVE

METHODS: dict[str, Callable[..., np.ndarray]] = {"blur": blur, "pixelate": pixelate, "solid": solid,
                                                 "generative": GENERATIVE}


def register(name: str, fn: Callable[..., np.ndarray]) -> None:
    """Slot for further methods."""
    METHODS[name] = fn
