"""anoncam.notify: the sd_notify datagrams, $WATCHDOG_USEC pacing and the Watchdog callback, on real
unix datagram sockets (path and abstract)."""
import logging
import os
import re
import socket
import time

import numpy as np
import pytest
from anoncam.notify import Notifier, NotifyError, Watchdog, attach, status_text, watchdog_interval
from anoncam.runner import Runner
from anoncam.stats import Stats
from anoncam.types import FrameResult
from conftest import make_config


@pytest.fixture
def listener(tmp_path):
    """A bound datagram socket; yields (NOTIFY_SOCKET value, socket)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    s.bind(str(path))
    s.settimeout(2)
    yield str(path), s
    s.close()


def recv_all(s, wait=0.05):
    out = []
    s.settimeout(wait)
    try:
        while True:
            out.append(s.recv(4096).decode())
    except (TimeoutError, BlockingIOError):
        return out


def test_path_socket(listener):
    addr, s = listener
    n = Notifier(addr)
    assert n.enabled and n.send("READY=1", "STATUS=x")
    assert s.recv(4096) == b"READY=1\nSTATUS=x"


def test_abstract_socket():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"anoncam-test-{os.getpid()}-{time.monotonic_ns()}"
    s.bind("\0" + name)
    s.settimeout(2)
    try:
        assert Notifier("@" + name).send("WATCHDOG=1")
        assert s.recv(4096) == b"WATCHDOG=1"
    finally:
        s.close()


def test_from_env_unsets_and_disabled_without_socket(listener):
    addr, _ = listener
    env = {"NOTIFY_SOCKET": addr}
    assert Notifier.from_env(env).enabled
    assert "NOTIFY_SOCKET" not in env  # child processes must not notify in our name
    n = Notifier.from_env({})
    assert not n.enabled and n.send("READY=1") is False


def test_bad_socket_address_is_a_clear_error():
    with pytest.raises(NotifyError, match="NOTIFY_SOCKET='vsock:2:1234'"):
        Notifier("vsock:2:1234")


def test_vanished_manager_never_raises(tmp_path, caplog):
    n = Notifier(str(tmp_path / "gone.sock"))
    with caplog.at_level(logging.WARNING, logger="anoncam.notify"):
        assert n.send("WATCHDOG=1") is False
        assert n.send("WATCHDOG=1") is False
    assert len([r for r in caplog.records if "cannot notify" in r.getMessage()]) == 1  # logged once


def test_watchdog_interval():
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0  # half of WatchdogSec=30s
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}) is None  # someone else's
    assert watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}) == 0.5
    env = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}
    watchdog_interval(env)
    assert env == {}
    for bad in ("abc", "0", "-5"):
        with pytest.raises(NotifyError, match="WATCHDOG_USEC"):
            watchdog_interval({"WATCHDOG_USEC": bad})


def frame(i):
    return FrameResult(i, time.time(), np.zeros((8, 8, 3), np.uint8), "ok")


def test_watchdog_ready_once_then_paced_pings(listener):
    addr, s = listener
    stats, wd = Stats(), Watchdog(Notifier(addr), interval=0.2)
    stats.frame("ok", {}, 2)
    wd(frame(0), stats)
    stats.frame("ok", {}, 2)
    wd(frame(1), stats)  # too soon for a ping
    msgs = recv_all(s)
    assert len(msgs) == 1 and msgs[0].startswith("READY=1\nSTATUS=") and "faces=2" in msgs[0]
    t_end = time.monotonic() + 1.0
    i = 2
    while time.monotonic() < t_end:  # ~100 frames a second for 1 s
        stats.frame("ok", {}, 1)
        wd(frame(i), stats)
        i += 1
        time.sleep(0.01)
    msgs = recv_all(s)
    assert 3 <= len(msgs) <= 6, msgs  # one every 0.2 s, not one per frame
    assert all(m.startswith("WATCHDOG=1\nSTATUS=fps=") for m in msgs)
    assert not any("READY=1" in m for m in msgs)
    assert "faces=1" in msgs[-1]


def test_no_watchdog_still_sends_status(listener):
    addr, s = listener
    stats, wd = Stats(), Watchdog(Notifier(addr), interval=None, status_every=0.1)
    for i in range(3):
        stats.frame("ok", {}, 0)
        wd(frame(i), stats)
        time.sleep(0.12)
    msgs = recv_all(s)
    assert msgs[0].startswith("READY=1") and len(msgs) == 3
    assert not any("WATCHDOG" in m for m in msgs) and msgs[-1].startswith("STATUS=")


def test_status_text():
    stats = Stats()
    for faces in (0, 3):
        stats.frame("covered" if faces else "ok", {}, faces)
    assert re.fullmatch(r"fps=\d+\.\d faces=3 frames=2 covered=1 dropped=0", status_text(stats))


def test_attach_only_under_systemd(listener, models, media, tmp_path):
    addr, _ = listener
    cfg = make_config(camera={"source": str(media["astronaut"])}, output={"dir": str(tmp_path / "out")})
    r = Runner(cfg)
    assert not attach(r, env={}).enabled and r.on_frame == []
    env = {"NOTIFY_SOCKET": addr, "WATCHDOG_USEC": "2000000"}
    n = attach(r, env=env)
    assert n.enabled and len(r.on_frame) == 1 and r.on_frame[0].interval == 1.0
    assert env == {}
