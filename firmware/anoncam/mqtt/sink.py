"""The MQTT sink: wires the connection (paho, spool, acknowledgements), the publisher (events,
snapshots, stats, faces, state, discovery) and the command dispatcher (commands -> Control).

The runner calls write() for frames while output is on and on_frame() for every frame; neither ever
waits on the network. The sink sees the camera only through Control; it holds no runner and edits
no config."""
from __future__ import annotations

import time
from pathlib import Path

from ..config import Config
from ..control import SETTINGS, Control
from ..keys import owner_recipient
from ..stats import Stats
from ..types import FrameResult
from .commands import CommandDispatcher
from .connection import Connection
from .publisher import Publisher
from .topics import Topics

HA_ONLINE_EVERY_S = 5.0  # Home Assistant's `online`: discovery again at most this often (a flood costs nothing)


class MqttSink:
    def __init__(self, cfg: Config, control: Control):
        m, camera = cfg.mqtt, cfg.camera.name
        self.m = m
        self.topics = Topics(m.prefix, camera)
        self.conn = Connection(m, m.client_id or f"anoncam-{camera}", self.topics.available,
                               m.spool.dir or Path(cfg.output.dir) / camera / "mqtt-spool")
        self.publisher = Publisher(m, camera, self.topics, self.conn, control)
        self.publisher.recipient = owner_recipient(cfg)  # snapshots' faces sealed on <snapshot>/sealed
        self.commands = CommandDispatcher(self.topics, control, self._refused) if m.commands else None
        self.revoke = None  # consent/revoke NAME (consent/command.py)
        if m.commands and cfg.consent.enabled:
            from ..consent.command import RevokeCommand
            self.revoke = RevokeCommand(cfg, self.topics.base)
        control.subscribe(self.publisher.changed)
        self._ha_online_at: float | None = None
        self.conn.start(self._on_connect, self._on_message)

    @property
    def run_id(self) -> str:
        return self.publisher.run_id

    @property
    def overflow(self):
        return self.conn.overflow

    def write(self, result: FrameResult) -> None:
        self.publisher.frame(result)

    def on_frame(self, result: FrameResult, stats: Stats) -> None:
        self.publisher.on_frame(result, stats)
        if self.commands is not None:
            self.commands.flush()  # commands dropped over the rate: one error event a second

    def close(self) -> None:
        if not self.conn.closed:
            if self.commands is not None:
                self.commands.flush(force=True)
            self.publisher.stop()
        self.conn.close()

    # paho's thread ----------------------------------------------------------------------------
    def _on_connect(self) -> None:
        self.publisher.on_connect()
        if self.commands is not None:
            self.conn.subscribe(self.topics.commands)
        if self.revoke is not None:
            self.conn.subscribe(self.revoke.topic)

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic == self.publisher.ha_status_topic:
            now = time.monotonic()
            if payload == b"online" and self.conn.connected and (  # Home Assistant restarted
                    self._ha_online_at is None or now - self._ha_online_at >= HA_ONLINE_EVERY_S):
                self._ha_online_at = now
                self.publisher.ha_online()
        elif self.revoke is not None and topic == self.revoke.topic:
            error = self.revoke.handle(payload)
            if error:
                self._refused("consent/revoke", "", error)  # the name is never echoed
        elif self.commands is not None:
            self.commands.handle(topic, payload)

    def _refused(self, setting: str, payload: str, error: str, dropped: int = 0) -> None:
        self.publisher.error(setting, payload, error, dropped)
        if setting in SETTINGS:
            self.publisher.put_state(setting, low=True)  # answer with the unchanged state
