"""The connection to the broker: paho's client and network thread (reconnects with backoff), a bounded
queue the camera loop puts messages in without waiting, and a worker thread that publishes them, or
spools events and snapshots on disk while the broker is unreachable and sends the spool, in order,
when it returns, deleting each spooled message once the broker has acknowledged it."""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import MqttConfig
from .client import FATAL_CONNACK, MqttError, first_connect, make_client, refused_message
from .spool import Spool

log = logging.getLogger(__name__)
_STOP = object()
WINDOW = 20            # spooled messages in flight at once while the spool is sent
FIRST_CONNACK_S = 10.0  # how long start-up waits for the broker to answer the first connection


@dataclass
class Message:
    topic: str
    payload: bytes = b""
    retain: bool = False
    spool: bool = False                         # store-and-forward while offline (events, snapshots)
    render: Callable[[], bytes] | None = None   # makes the payload on the worker thread (a snapshot's JPEG)
    low: bool = False                           # answers to commands: only into the queue's first half


class Connection:
    def __init__(self, m: MqttConfig, client_id: str, will_topic: str, spool_dir: Path):
        self.m, self.will_topic = m, will_topic
        self.q: queue.Queue = queue.Queue(m.queue_size)
        self.overflow: Counter[str] = Counter()  # dropped because the queue was full, by topic name
        self.published = self.skipped = 0
        self.spool = Spool(spool_dir, m.spool.max_bytes)
        self._sent: deque = deque()  # (spool name or None, epoch, MQTTMessageInfo) handed to paho, unacked
        self._epoch = 0              # +1 per connection; paho resends older unacked messages itself
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._answered = threading.Event()
        self._refused = None
        self._closed = False
        self._on_connect_hook: Callable[[], None] = lambda: None
        self.client = make_client(m, client_id, will_topic)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect

    def start(self, on_connect: Callable[[], None], on_message: Callable[[str, bytes], None]) -> None:
        """Connect. on_connect runs on paho's thread after every (re)connection, once `online` is sent;
        on_message gets every message of the subscribed topics there."""
        self._on_connect_hook = on_connect
        self.client.on_message = lambda client, userdata, msg: on_message(msg.topic, msg.payload)
        if first_connect(self.client, self.m):
            self._answered.wait(FIRST_CONNACK_S)
            if self._refused is not None and self._refused.value in FATAL_CONNACK:
                self.client.loop_stop()
                raise MqttError(refused_message(self.m, self._refused))
        self._worker = threading.Thread(target=self._work, name="anoncam-mqtt", daemon=True)
        self._worker.start()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def closed(self) -> bool:
        return self._closed

    # any thread -------------------------------------------------------------------------------
    def put(self, msg: Message) -> bool:
        """Queue a message without waiting; False (and counted) when the queue is full. A low-priority
        message (an answer to a command) is refused once the queue is half full, so a flood of commands
        never takes the room of events and snapshots (counted as 'low')."""
        try:
            if msg.low and self.q.qsize() >= self.m.queue_size // 2:
                raise queue.Full
            self.q.put_nowait(msg)
            return True
        except queue.Full:
            with self._lock:
                self.overflow["low" if msg.low else msg.topic.rsplit("/", 1)[-1]] += 1
                total = sum(self.overflow.values())
            if total == 1 or total % 100 == 0:
                log.warning("mqtt queue full (mqtt.queue_size=%d): %d message(s) dropped so far",
                            self.m.queue_size, total)
            return False

    def counters(self) -> dict:
        return {"connected": self.connected, "queue": self.q.qsize(), "queue_size": self.m.queue_size,
                "overflow": dict(self.overflow), "published": self.published, "spool_messages": len(self.spool),
                "spool_bytes": self.spool.bytes, "spooled": self.spool.spooled,
                "spool_dropped": self.spool.dropped, "skipped": self.skipped}

    # paho's thread ----------------------------------------------------------------------------
    def publish_now(self, topic: str, payload: str | bytes, qos: int | None = None, retain: bool = True) -> None:
        """Publish at once, bypassing the queue (from on_connect: what every connection sends again)."""
        self.client.publish(topic, payload, qos=self.m.qos if qos is None else qos, retain=retain)

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            self._refused = reason
            self._answered.set()
            log.error("%s", refused_message(self.m, reason))
            return
        self._refused = None
        self._epoch += 1
        self._connected.set()
        self._answered.set()
        log.info("mqtt: connected to %s:%d", self.m.host, self.m.port)
        client.publish(self.will_topic, "online", qos=1, retain=True)
        self._on_connect_hook()

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        self._connected.clear()
        if not self._closed:
            log.warning("mqtt: disconnected from %s:%d (%s); spooling and reconnecting",
                        self.m.host, self.m.port, reason)

    # worker thread ----------------------------------------------------------------------------
    def _work(self) -> None:
        stop_at = None
        while True:
            busy = len(self.spool) or self._sent
            try:
                msg = self.q.get(timeout=0.02 if busy else 0.2)
            except queue.Empty:
                msg = None
            if msg is _STOP:
                stop_at = time.monotonic() + self.m.close_timeout_s
            elif msg is not None:
                try:
                    self._handle(msg)
                except Exception as e:  # e.g. a full disk while spooling: count it, keep going
                    self.skipped += 1
                    log.error("mqtt: message to %s lost: %s: %s", msg.topic, type(e).__name__, e)
            try:
                self._ack()
                self._drain()
            except Exception as e:
                log.error("mqtt: sending the spool failed: %s: %s", type(e).__name__, e)
            if stop_at is not None and self.q.empty() and (
                    not self._sent and (not len(self.spool) or not self.connected)  # all sent or on disk
                    or time.monotonic() > stop_at):
                return

    def _stale(self) -> bool:
        """Messages from before the last reconnect are not acknowledged yet (paho resends them)."""
        return bool(self._sent) and self._sent[0][1] < self._epoch

    def _handle(self, msg: Message) -> None:
        if msg.render is not None:
            msg.payload, msg.render = msg.render(), None
        if not msg.spool:  # stats, state, faces: sent again on reconnect or superseded
            if self.connected:
                self.client.publish(msg.topic, msg.payload, qos=self.m.qos, retain=msg.retain)
            else:
                self.skipped += 1
            return
        direct = (self.connected and not self.spool.unsent and not self._stale()
                  and len(self._sent) < self.m.queue_size)
        if direct:
            self._publish(None, msg.topic, msg.payload, msg.retain)
        else:
            self.spool.put(msg.topic, msg.payload, msg.retain)

    def _publish(self, name: str | None, topic: str, payload: bytes, retain: bool) -> None:
        info = self.client.publish(topic, payload, qos=self.m.qos, retain=retain)
        if self.m.qos:
            self._sent.append((name, self._epoch, info))
        else:
            self.published += 1
            if name:
                self.spool.done(name)

    def _ack(self) -> None:
        while self._sent and self._sent[0][2].is_published():
            name = self._sent.popleft()[0]
            self.published += 1
            if name:
                self.spool.done(name)
                if not len(self.spool):
                    log.info("mqtt: spool sent (%d spooled, %d dropped since start)", self.spool.spooled,
                             self.spool.dropped)

    def _drain(self) -> None:
        if not self.connected or self._stale():
            return
        while len(self._sent) < WINDOW:
            item = self.spool.next_unsent()
            if item is None:
                return
            self._publish(*item)

    # shutdown ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Send what is queued (up to mqtt.close_timeout_s; events and snapshots left stay spooled),
        then `offline` and disconnect."""
        if self._closed:
            return
        try:
            self.q.put(_STOP, timeout=self.m.close_timeout_s + 1)
        except queue.Full:
            log.error("mqtt: queue stuck at close; %d message(s) not sent", self.q.qsize())
        self._worker.join(self.m.close_timeout_s + 5)
        self._closed = True
        if len(self.spool):
            log.warning("mqtt: %d message(s) stay in the spool %s and are sent at the next start",
                        len(self.spool), self.spool.dir)
        if self.connected:
            info = self.client.publish(self.will_topic, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(2.0)
            except (RuntimeError, ValueError):
                pass
        self.client.disable_logger()  # paho logs a harmless race of its loop thread with disconnect()
        self.client.disconnect()
        self.client.loop_stop()
        log.info("mqtt: closed; %d published, %d dropped (queue full), %d spooled, %d dropped from the spool",
                 self.published, sum(self.overflow.values()), self.spool.spooled, self.spool.dropped)
