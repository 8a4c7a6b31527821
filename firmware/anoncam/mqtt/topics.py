"""Topic names and small payload helpers.

<prefix>/<camera>/available        online | offline (retained, last will)
<prefix>/<camera>/events           JSON: track appear | update | end, error
<prefix>/<camera>/snapshot         anonymized JPEG
<prefix>/<camera>/snapshot/sealed  with an owner key: that snapshot's faces, sealed (seal.SealedSnapshot)
<prefix>/<camera>/stats            JSON every mqtt.stats_every_s and after every connection
<prefix>/<camera>/faces            faces in view (retained, on change; 0 on pause and stop)
<prefix>/<camera>/<setting>/set    command; answered on <prefix>/<camera>/<setting>/state (retained)
"""
from __future__ import annotations

import struct


class Topics:
    def __init__(self, prefix: str, camera: str):
        self.base = f"{prefix}/{camera}"
        self.available = f"{self.base}/available"
        self.events = f"{self.base}/events"
        self.snapshot = f"{self.base}/snapshot"
        self.stats = f"{self.base}/stats"
        self.faces = f"{self.base}/faces"
        self.commands = f"{self.base}/+/set"

    def set(self, setting: str) -> str:
        return f"{self.base}/{setting}/set"

    def state(self, setting: str) -> str:
        return f"{self.base}/{setting}/state"

    def setting_of(self, topic: str) -> str | None:
        """'enabled' for <base>/enabled/set; None for any other topic."""
        head, tail = f"{self.base}/", "/set"
        if topic.startswith(head) and topic.endswith(tail):
            name = topic[len(head):-len(tail)]
            return name if name and "/" not in name else None
        return None


def on_off(value: bool) -> str:
    return "ON" if value else "OFF"


def parse_on_off(text: str) -> bool:
    t = text.strip().upper()
    if t not in ("ON", "OFF"):
        raise ValueError(f"expected ON or OFF, got {text[:40]!r}")
    return t == "ON"


def jpeg_with_comment(jpeg: bytes, text: str) -> bytes:
    """Insert a JPEG COM segment (frame index, capture time) right after the SOI marker."""
    data = text.encode("ascii")
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(data) + 2) + data + jpeg[2:]


def jpeg_comment(jpeg: bytes) -> str | None:
    """The text of the COM segment written by jpeg_with_comment, if any."""
    if jpeg[:4] != b"\xff\xd8\xff\xfe":
        return None
    n = struct.unpack(">H", jpeg[4:6])[0]
    return jpeg[6:4 + n].decode("ascii", "replace")
