"""Revocation by MQTT command: <prefix>/<camera>/consent/revoke, payload NAME (UTF-8).

Runs on paho's thread: the name is removed from the gallery file (under its lock, written atomically,
encrypted if a key is configured) and the frame loop's file watch drops every exemption on its next
frame. Nothing about the name goes back out: no echo, no state; the log says only whether someone was
removed. Commands over RATE a second are dropped (each one reads and writes the gallery)."""
from __future__ import annotations

import logging
import time

from .gallery import Gallery, GalleryError, default_path, gallery_key, locked

log = logging.getLogger(__name__)
RATE = 5  # commands a second, at most


class RevokeCommand:
    def __init__(self, cfg, base_topic: str):
        self.topic = f"{base_topic}/consent/revoke"
        self.path = default_path(cfg)
        self.key = gallery_key(cfg.consent)
        self._window, self._count = 0, 0

    def handle(self, payload: bytes) -> str | None:
        """Revoke the named person; an error text (naming no one) when the command cannot be done."""
        now = int(time.monotonic())
        self._window, self._count = (now, 0) if now != self._window else (self._window, self._count)
        self._count += 1
        if self._count > RATE:
            return f"more than {RATE} revoke commands a second; dropped"
        if len(payload) > 400:  # 100 characters of UTF-8 at most
            return "the payload must be the enrolled name (1-100 characters)"
        try:
            name = payload.decode("utf-8").strip()
        except UnicodeDecodeError:
            return "the payload is not UTF-8 text"
        if not name or len(name) > 100:
            return "the payload must be the enrolled name (1-100 characters)"
        try:
            with locked(self.path):
                done = Gallery.load(self.path, key=self.key).revoke(name)
        except (GalleryError, OSError) as e:
            log.error("consent: revoke command failed: %s", e)
            return "the consent gallery cannot be used; see the camera's log"
        log.info("consent: revoke command: %s", "one person removed" if done else "no such person enrolled")
        return None
