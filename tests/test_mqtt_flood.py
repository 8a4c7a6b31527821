"""A hostile broker user (issue 17.4): a flood of bad commands and huge setting names or payloads
against the real daemon through a real mosquitto. The camera's track events are not pushed out, error
events are few and bounded, and nothing a client sends is echoed in full."""
from __future__ import annotations

import json
import re
import signal
import time

import paho.mqtt.client as mqtt
from anoncam.mqtt.commands import MAX_PAYLOAD, RATE
from paho.mqtt.enums import CallbackAPIVersion
from test_mqtt import BASE, Sub, broker, daemon_config, finish, start_daemon  # noqa: F401 (fixture)

FLOOD = 10_000
HUGE = 60_000


def test_command_flood_does_not_push_out_events(media, tmp_path, cli_env, broker):  # noqa: F811
    sub = Sub(broker.port)
    cfg = daemon_config(tmp_path, fps=15, event_update_every_s=0.2, snapshot={"every_s": 0.5}, stats_every_s=0.5)
    proc = start_daemon(media, tmp_path, cli_env, f"mqtt://127.0.0.1:{broker.port}", cfg, 100000)
    try:
        assert sub.wait(lambda: any(e["type"] == "appear" for e in sub.events()), 60)
        # a second client floods method/set as fast as paho sends (QoS 1: the broker loses none)
        flood = mqtt.Client(CallbackAPIVersion.VERSION2)
        flood.max_inflight_messages_set(200)
        flood.max_queued_messages_set(0)
        flood.connect("127.0.0.1", broker.port)
        flood.loop_start()
        infos = [flood.publish(f"{BASE}/method/set", f"sparkle{i}", qos=1) for i in range(FLOOD)]
        infos.append(flood.publish(f"{BASE}/{'x' * HUGE}/set", "ON", qos=1))
        infos.append(flood.publish(f"{BASE}/enabled/set", "y" * HUGE, qos=1))
        for info in infos:
            info.wait_for_publish(60)
        t_end = time.time()
        flood.disconnect()
        flood.loop_stop()
        # track events keep coming after the flood
        assert sub.wait(lambda: [e for e in sub.events() if e["type"] != "error" and e["ts"] > t_end + 1], 30)
        time.sleep(1.5)  # the dropped-commands report comes about once a second
    finally:
        proc.send_signal(signal.SIGTERM)
    err = finish(proc, timeout=90)
    assert sub.wait(lambda: sub.last(f"{BASE}/available") == "offline", 10)
    sub.close()

    raw = [m.payload for m in sub.on(f"{BASE}/events")]
    assert max(len(p) for p in raw) < 1024, "an event echoes what a client sent in full"
    assert all(b"x" * 100 not in p and b"y" * 100 not in p for p in raw)
    assert "x" * 100 not in err and "y" * 100 not in err, "the log echoes a huge name or payload"
    events = [json.loads(p) for p in raw]
    errors = [e for e in events if e["type"] == "error"]
    # few error events: each either one refused command or a count of commands dropped unread
    assert 0 < len(errors) <= 200, len(errors)
    dropped = sum(e.get("dropped", 0) for e in errors if e["setting"] == "method")
    assert 0 < dropped < FLOOD
    # the huge name and the huge payload are refused (or dropped over the rate); the refusal is
    # always logged, while its error event is low priority and may be refused by a half-full queue
    assert any(e["setting"].startswith("x" * 10) and "too long" in e["error"] for e in errors) or \
        any(e.get("dropped") for e in errors if e["setting"] == "?") or \
        re.search(r"mqtt command x{10}.*refused: setting name too long", err)
    assert any("too long" in e["error"] and str(MAX_PAYLOAD) in e["error"] for e in errors if e["setting"] == "enabled") \
        or any(e.get("dropped") for e in errors if e["setting"] == "enabled") or \
        re.search(rf"mqtt command enabled=.*refused: payload too long \(\d+ bytes; at most {MAX_PAYLOAD}\)", err)
    # not one track event lost to the queue: the camera's own stats say so, and every track ends
    stats = [json.loads(m.payload) for m in sub.on(f"{BASE}/stats")]
    overflow = stats[-1]["mqtt"]["overflow"]
    assert overflow.get("events", 0) == 0 and overflow.get("snapshot", 0) == 0, overflow
    track = [e for e in events if e["type"] != "error"]
    open_ = set()
    for e in track:
        if e["type"] == "appear":
            open_.add(e["track_id"])
        elif e["type"] == "end":
            open_.discard(e["track_id"])
    assert open_ == set(), "a track's end event was lost"
    assert sub.last(f"{BASE}/method/state") not in (None, "") and not sub.last(f"{BASE}/method/state").startswith("sparkle")
    assert RATE <= 10


def test_rate_limit_per_setting_and_the_dropped_report(tmp_path):
    """The dispatcher on its own with a real Control and a clock the test moves: a burst reaches the
    Control only up to BURST per setting, the rest is reported once, with its count."""
    from anoncam.config import validate
    from anoncam.control import Control
    from anoncam.mqtt.commands import BURST, CommandDispatcher
    from anoncam.mqtt.topics import Topics
    control = Control(validate({}), state_dir=tmp_path, methods=["blur", "solid"])
    errors = []
    d = CommandDispatcher(Topics("anoncam", "door"), control, lambda *a, **k: errors.append((a, k)))
    now = [time.monotonic()]
    d.clock = lambda: now[0]
    for _ in range(100):
        d.handle(f"{BASE}/method/set", b"sparkle")
    d.handle(f"{BASE}/enabled/set", b"OFF")  # another setting has its own budget
    assert len(errors) == BURST and d.counts == {"accepted": 1, "refused": BURST, "dropped": 100 - BURST}
    d.flush()
    assert len(errors) == BURST, "the report waits a second"
    now[0] += 1.0
    d.flush()
    assert errors[-1][0][0] == "method" and errors[-1][1] == {"dropped": 100 - BURST}
    d.handle(f"{BASE}/method/set", b"solid")  # a second later the setting takes commands again
    control.apply_pending()
    assert (control.method, control.enabled) == ("solid", False)


def test_home_assistant_online_flood_costs_little(media, tmp_path, cli_env, broker):  # noqa: F811
    """1,000 `online` announcements on homeassistant/status (anyone on the broker may send them) make
    the camera publish discovery again at most once per HA_ONLINE_EVERY_S, not 8 configs each."""
    from anoncam.mqtt.sink import HA_ONLINE_EVERY_S
    sub = Sub(broker.port, topics=("homeassistant/#",))
    cfg = daemon_config(tmp_path, fps=15)
    proc = start_daemon(media, tmp_path, cli_env, f"mqtt://127.0.0.1:{broker.port}", cfg, 100000)

    def again():  # discovery configs sent again (live, not the retained copies a new subscriber gets)
        return [m for m in sub.msgs if m.topic.endswith("/config") and not m.retain]

    try:
        assert sub.wait(lambda: len(sub.msgs) >= 8, 60)
        flood = mqtt.Client(CallbackAPIVersion.VERSION2)
        flood.connect("127.0.0.1", broker.port)
        flood.loop_start()
        t = time.monotonic()
        infos = [flood.publish("homeassistant/status", "online", qos=1) for _ in range(1000)]
        for info in infos:
            info.wait_for_publish(60)
        took = time.monotonic() - t
        flood.disconnect()
        flood.loop_stop()
        assert sub.wait(lambda: len(again()) >= 8, 15), "the first announcement is answered"
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGTERM)
    finish(proc)
    sub.close()
    rounds = len(again()) / 8
    assert rounds <= took / HA_ONLINE_EVERY_S + 3, (len(again()), took)
