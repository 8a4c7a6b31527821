"""MQTT commands, <prefix>/<camera>/<setting>/set, to the camera's Control.

Runs on paho's thread and only checks and queues: Control applies the change between frames and its
listeners (the publisher) answer with the new state. A bad command changes nothing: `on_error` gets
the setting, the payload and why (the publisher sends an error event and the unchanged state)."""
from __future__ import annotations

import logging
from collections.abc import Callable

from ..control import Control
from .topics import Topics, parse_on_off

log = logging.getLogger(__name__)


class CommandDispatcher:
    def __init__(self, topics: Topics, control: Control, on_error: Callable[[str, str, str], None]):
        self.topics, self.control, self.on_error = topics, control, on_error

    def handle(self, topic: str, payload: bytes) -> bool:
        """Act on a command topic; False for any other topic."""
        setting = self.topics.setting_of(topic)
        if setting is None:
            return False
        text = payload.decode("utf-8", "replace").strip()
        try:
            self.control.request(setting, parse_on_off(text) if setting in ("enabled", "snapshots") else text)
        except ValueError as e:
            log.warning("mqtt command %s=%r refused: %s", setting, text[:64], e)
            self.on_error(setting, text, str(e))
        return True
