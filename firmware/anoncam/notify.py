"""systemd notify protocol (sd_notify(3)): READY=1, WATCHDOG=1, STATUS= as datagrams to $NOTIFY_SOCKET.

Ours rather than a library: `sdnotify` on PyPI is unmaintained since 2017 and `systemd-python` ships no
wheels (it builds against libsystemd-dev). The protocol is one datagram per message.
"""
from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class NotifyError(RuntimeError):
    """$NOTIFY_SOCKET or $WATCHDOG_USEC cannot be used."""


class Notifier:
    """Sends messages to the service manager; does nothing when $NOTIFY_SOCKET is not set."""

    def __init__(self, address: str | None):
        self.address = address
        self.sock = None
        self._failed = False
        if not address:
            return
        if address.startswith("@"):  # abstract namespace
            address = "\0" + address[1:]
        elif not address.startswith("/"):
            raise NotifyError(f"NOTIFY_SOCKET={self.address!r}: only unix socket paths and @abstract names "
                              "are supported")
        self._target = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_env(cls, env=None, unset: bool = True) -> Notifier:
        """From $NOTIFY_SOCKET; by default remove it from the environment so child processes do not
        notify in our name (as sd_notify(unset_environment=1))."""
        env = os.environ if env is None else env
        n = cls(env.get("NOTIFY_SOCKET"))
        if unset:
            env.pop("NOTIFY_SOCKET", None)
        return n

    @property
    def enabled(self) -> bool:
        return self.sock is not None

    def send(self, *lines: str) -> bool:
        """Send "KEY=value" lines as one datagram. A failure is logged once and never raised: a missing
        manager must not stop the camera (the watchdog, if any, will notice)."""
        if self.sock is None:
            return False
        try:
            self.sock.sendto("\n".join(lines).encode(), self._target)
            return True
        except OSError as e:
            if not self._failed:
                log.warning("cannot notify systemd at %s: %s", self.address, e)
                self._failed = True
            return False

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def watchdog_interval(env=None, unset: bool = True) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of $WATCHDOG_USEC (as sd_watchdog_enabled(3)), or None
    when no watchdog is set or it is meant for another process ($WATCHDOG_PID)."""
    env = os.environ if env is None else env
    usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if unset:
        env.pop("WATCHDOG_USEC", None)
        env.pop("WATCHDOG_PID", None)
    if not usec:
        return None
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        raise NotifyError(f"WATCHDOG_USEC={usec!r} is not a whole number of microseconds") from None
    if value <= 0:
        raise NotifyError(f"WATCHDOG_USEC={usec!r} must be positive")
    return value / 1e6 / 2


def status_text(stats) -> str:
    s = stats.summary()
    return (f"fps={s['fps']:.1f} faces={s['faces_in_view']} frames={s['frames']} "
            f"covered={s['covered']} dropped={s['dropped']}")


class Watchdog:
    """A runner on_frame callback: READY=1 after the first processed frame, then WATCHDOG=1 every
    `interval` seconds and STATUS= every `status_every` seconds, all from the frame loop itself, so a
    stuck camera or inference stops the pings."""

    def __init__(self, notifier: Notifier, interval: float | None, status_every: float = 5.0):
        self.notifier = notifier
        self.interval = interval
        self.status_every = min(status_every, interval) if interval else status_every
        self.ready = False
        self._last_ping = self._last_status = 0.0

    def __call__(self, result, stats) -> None:
        now = time.monotonic()
        if not self.ready:
            self.ready = True
            self._last_ping = self._last_status = now
            self.notifier.send("READY=1", "STATUS=" + status_text(stats))
            return
        lines = []
        if self.interval is not None and now - self._last_ping >= self.interval:
            lines.append("WATCHDOG=1")
            self._last_ping = now
        if now - self._last_status >= self.status_every:
            lines.append("STATUS=" + status_text(stats))
            self._last_status = now
        if lines:
            self.notifier.send(*lines)


def attach(runner, env=None) -> Notifier:
    """When started by systemd ($NOTIFY_SOCKET set), add the Watchdog to the runner's on_frame
    callbacks. Returns the notifier (disabled otherwise) for a last STOPPING=1."""
    env = os.environ if env is None else env
    notifier = Notifier.from_env(env)
    interval = watchdog_interval(env)
    if notifier.enabled:
        runner.on_frame.append(Watchdog(notifier, interval))
        log.info("systemd notify on; watchdog ping every %s", f"{interval:.1f} s" if interval else "(off)")
    return notifier
