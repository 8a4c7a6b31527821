"""MQTT commands, <prefix>/<camera>/<setting>/set, to the camera's Control.

Runs on paho's thread and only checks and queues: Control applies the change between frames and its
listeners (the publisher) answer with the new state. A bad command changes nothing: `on_error` gets
the setting, the payload and why (the publisher sends an error event and the unchanged state).

Bounded against a hostile broker user: a setting name over MAX_NAME characters or a payload over
MAX_PAYLOAD bytes is refused unread, and what an error echoes is cut to ECHO characters. Each setting
(unknown names share one budget) takes at most RATE commands a second (bursts of BURST); the rest are
dropped unread and counted, and reported as one error event with `dropped` (flush(), about once a
second), so a flood costs the camera a few messages a second and never pushes its events out."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..control import SETTINGS, Control
from .topics import Topics, parse_on_off

log = logging.getLogger(__name__)
MAX_NAME = 64        # characters of a setting name
MAX_PAYLOAD = 256    # bytes of a command payload
ECHO = 64            # characters of a setting or payload echoed in an error event or log line
RATE, BURST = 5.0, 10  # commands per second per setting, and the burst allowed
OTHER = "?"          # the shared budget of names that are not settings


def cut(text: str, n: int = ECHO) -> str:
    return text if len(text) <= n else text[:n] + "..."


class Bucket:
    """A token bucket: take() is True while the setting is within RATE (bursts of BURST)."""

    def __init__(self, now: float):
        self.tokens, self.t = float(BURST), now

    def take(self, now: float) -> bool:
        self.tokens = min(BURST, self.tokens + (now - self.t) * RATE)
        self.t = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class CommandDispatcher:
    def __init__(self, topics: Topics, control: Control, on_error: Callable[..., None]):
        """on_error(setting, payload, error, dropped=0)."""
        self.topics, self.control, self.on_error = topics, control, on_error
        self.clock: Callable[[], float] = time.monotonic  # the rate limit's clock
        self._buckets: dict[str, Bucket] = {}
        self._dropped: dict[str, int] = {}  # over the rate since the last flush, by budget
        self._flushed = self.clock()
        self._lock = threading.Lock()
        self.counts = {"accepted": 0, "refused": 0, "dropped": 0}

    def handle(self, topic: str, payload: bytes) -> bool:
        """Act on a command topic; False for any other topic. Never raises on what a client sends."""
        setting = self.topics.setting_of(topic)
        if setting is None:
            return False
        key = setting if setting in SETTINGS else OTHER
        now = self.clock()
        with self._lock:
            bucket = self._buckets.setdefault(key, Bucket(now))
            if not bucket.take(now):
                self._dropped[key] = self._dropped.get(key, 0) + 1
                self.counts["dropped"] += 1
                return True
        if len(setting) > MAX_NAME:
            return self._refuse(setting, "", f"setting name too long ({len(setting)} characters; at most {MAX_NAME})")
        if len(payload) > MAX_PAYLOAD:
            return self._refuse(setting, "", f"payload too long ({len(payload)} bytes; at most {MAX_PAYLOAD})")
        text = payload.decode("utf-8", "replace").strip()
        try:
            self.control.request(setting, parse_on_off(text) if setting in ("enabled", "snapshots") else text)
        except ValueError as e:
            return self._refuse(setting, text, str(e))
        self.counts["accepted"] += 1
        return True

    def _refuse(self, setting: str, text: str, why: str) -> bool:
        self.counts["refused"] += 1
        log.warning("mqtt command %s=%r refused: %s", cut(setting), cut(text), cut(why, 200))
        self.on_error(cut(setting), cut(text), cut(why, 200))
        return True

    def flush(self, force: bool = False) -> None:
        """Report the commands dropped over the rate, at most once a second (any thread)."""
        now = self.clock()
        if not self._dropped or (not force and now - self._flushed < 1.0):
            return
        with self._lock:
            dropped, self._dropped, self._flushed = self._dropped, {}, now
        for key, n in dropped.items():
            log.warning("mqtt commands: %d command(s) for %s dropped (over %g a second)", n,
                        key if key != OTHER else "unknown settings", RATE)
            self.on_error(key, "", f"rate limit: {n} command(s) dropped unread (at most {RATE:g} a second "
                          "per setting)", dropped=n)
