"""Sinks receive anonymized frames only. Disk today; the MQTT uplink implements the same interface."""
from __future__ import annotations

from typing import Protocol

from ..types import FrameResult


class Sink(Protocol):
    def write(self, result: FrameResult) -> None:
        """Take one processed frame. result.image is anonymized (or None when the frame was dropped);
        result.sidecar carries per-frame extras (e.g. owner-key data) a sink may store beside it."""

    def close(self) -> None: ...
