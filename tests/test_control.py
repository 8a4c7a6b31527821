"""Control: the run-time settings (enabled, snapshots, method) that MQTT commands change, applied
between frames, never by editing the config, and kept across restarts in the state directory
(<output.dir>/<camera>/settings.json). The MQTT command dispatcher sees only Control."""
from __future__ import annotations

import ast
import inspect
import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from anoncam import registry
from anoncam.config import override, validate
from anoncam.control import SETTINGS_FILE, Control
from anoncam.mqtt.commands import CommandDispatcher
from anoncam.mqtt.sink import MqttSink
from anoncam.mqtt.topics import Topics
from anoncam.pipeline import Pipeline
from conftest import TEST_BUDGET_MS, make_config
from test_mqtt import BASE, CAM, DEFAULT_METHOD, Broker, Sub

MQTT_DIR = Path(__file__).resolve().parents[1] / "firmware" / "anoncam" / "mqtt"


def changes_of(control: Control) -> list:
    seen = []
    control.subscribe(seen.append)
    return seen


def test_settings_persist_and_an_edited_config_wins(tmp_path, caplog):
    cfg = make_config(camera={"name": CAM}, output={"dir": str(tmp_path)})
    before = cfg.model_dump()
    c = Control(cfg)
    path = tmp_path / CAM / SETTINGS_FILE
    seen = changes_of(c)
    c.set_method("solid")
    assert c.method == DEFAULT_METHOD and not path.exists(), "applied between frames, not at once"
    c.apply_pending()
    assert c.method == "solid" and seen[-1].new == "solid" and seen[-1].old == DEFAULT_METHOD and not seen[-1].error
    c.pause()
    c.set_snapshots(False)
    c.apply_pending()
    assert c.state() == {"enabled": False, "method": "solid", "snapshots": False}
    assert json.loads(path.read_text()) == {
        "method": {"value": "solid", "configured": DEFAULT_METHOD},
        "enabled": {"value": False, "configured": True}, "snapshots": {"value": False, "configured": True}}
    assert cfg.model_dump() == before, "the config object is never edited"

    again = Control(cfg)  # the next start
    assert again.state() == {"enabled": False, "method": "solid", "snapshots": False}
    again.resume()
    again.apply_pending()
    assert set(json.loads(path.read_text())) == {"method", "snapshots"}, "back to the config's value: forgotten"

    # the config file now says pixelate (or --method pixelate): that wins over the earlier run-time change
    edited = override(cfg, **{"anonymize.method": "pixelate"})
    with caplog.at_level(logging.INFO, logger="anoncam.control"):
        assert Control(edited).state() == {"enabled": True, "method": "pixelate", "snapshots": False}
    assert "the config now says pixelate" in caplog.text

    # a broken or tampered file is reported and the config applies
    path.write_text('{"method": {"value": "sparkle", "configured": "%s"}}' % DEFAULT_METHOD)
    with caplog.at_level(logging.WARNING, logger="anoncam.control"):
        assert Control(cfg).method == DEFAULT_METHOD
    assert "unknown method 'sparkle'" in caplog.text
    path.write_text("{not json")
    assert Control(cfg).state() == {"enabled": True, "method": DEFAULT_METHOD, "snapshots": True}


def test_bad_requests_queue_nothing(tmp_path):
    c = Control(make_config(output={"dir": str(tmp_path)}))
    for setting, value, msg in [("method", "sparkle", "unknown method 'sparkle'; available: " +
                                 ", ".join(registry.names())),
                                ("enabled", "ON", "enabled takes true or false"),
                                ("volume", 11, "unknown setting 'volume'; settings: enabled, method, snapshots")]:
        with pytest.raises(ValueError, match=msg):
            c.request(setting, value)
    seen = changes_of(c)
    c.apply_pending()
    assert seen == [] and list(tmp_path.rglob(SETTINGS_FILE)) == []


class KeepVisible:
    """A real policy without a method to switch (consent: every face stays visible)."""

    def decide(self, frame, faces, sidecar) -> None:
        for f in faces:
            f.method = None


def test_a_switch_that_fails_is_reported_and_not_kept(tmp_path, models):
    cfg = make_config(output={"dir": str(tmp_path)}, anonymize={"method": "blur"})
    c = Control(cfg, Pipeline.from_config(cfg, policy=KeepVisible()))
    seen = changes_of(c)
    c.set_method("solid")
    c.apply_pending()
    assert c.method == "blur" and seen[-1].error and "no method to switch" in seen[-1].error
    assert list(tmp_path.rglob(SETTINGS_FILE)) == []


def test_the_dispatcher_sees_only_control(tmp_path):
    c = Control(make_config(output={"dir": str(tmp_path)}))
    errors = []
    d = CommandDispatcher(Topics("anoncam", CAM), c, lambda *e: errors.append(e))
    assert d.handle(f"{BASE}/method/set", b"solid") and d.handle(f"{BASE}/enabled/set", b" off ")
    assert c.state()["method"] == DEFAULT_METHOD
    c.apply_pending()
    assert (c.method, c.enabled) == ("solid", False)
    assert d.handle(f"{BASE}/volume/set", b"11") and d.handle(f"{BASE}/snapshots/set", b"maybe")
    assert [e[:2] for e in errors] == [("volume", "11"), ("snapshots", "maybe")]
    assert "expected ON or OFF" in errors[1][2]
    assert not d.handle(f"{BASE}/events", b"{}") and not d.handle("other/door/method/set", b"blur")

    # what the MQTT code is given: a Control, never the runner; nothing of it refers to one
    assert list(inspect.signature(CommandDispatcher).parameters) == ["topics", "control", "on_error"]
    assert list(inspect.signature(MqttSink).parameters) == ["cfg", "control"]
    for path in MQTT_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        names |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) for a in n.args.args}
        imports = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {"runner", "Runner", "pipeline", "set_method"} & names, path.name
        assert not [m for m in imports if m.split(".")[-1] in ("runner", "pipeline") or "anonymize" in m], path.name
    code = "import sys, anoncam.mqtt.sink; print(sorted(m for m in sys.modules if m.startswith(" \
           "('anoncam.runner', 'anoncam.pipeline', 'anoncam.anonymize'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


def test_a_method_set_over_mqtt_survives_a_restart(media, tmp_path, broker):
    """method/set solid on a running camera; a new Runner on the same state directory runs solid,
    says so at connect and in its events and stats; the config object still says the default."""
    from anoncam.runner import Runner
    cfg = validate({"failsafe": {"budget_ms": TEST_BUDGET_MS},
                    "camera": {"name": CAM, "source": str(media["cap13"]), "loop": False, "fps": 15},
                    "output": {"dir": str(tmp_path / "out"), "stills": {"enabled": False},
                               "video": {"enabled": False}},
                    "mqtt": {"enabled": True, "host": "127.0.0.1", "port": broker.port, "stats_every_s": 0.5,
                             "event_update_every_s": 0.2}})
    sub = Sub(broker.port)
    first = Runner(cfg)
    t = threading.Thread(target=first.run, daemon=True)
    t.start()
    try:
        assert sub.wait(lambda: sub.last(f"{BASE}/method/state") == DEFAULT_METHOD and sub.events(), 30)
        sub.publish(f"{BASE}/method/set", "solid")
        assert sub.wait(lambda: sub.last(f"{BASE}/method/state") == "solid", 15)
        assert sub.wait(lambda: any(e.get("method") == "solid" for e in sub.events()), 15)
    finally:
        first.stop()
        t.join(60)
    assert not t.is_alive()
    saved = json.loads((tmp_path / "out" / CAM / SETTINGS_FILE).read_text())
    assert saved == {"method": {"value": "solid", "configured": DEFAULT_METHOD}}
    assert cfg.anonymize.method == DEFAULT_METHOD and first.pipeline.cfg.anonymize.method == DEFAULT_METHOD

    sub.msgs.clear()
    second = Runner(cfg)
    assert second.control.method == "solid" and second.pipeline.policy.method == "solid"
    second.run(max_frames=40)
    run_id = second.sinks[-1].run_id
    assert sub.wait(lambda: sub.last(f"{BASE}/available") == "offline", 10)
    events = [e for e in sub.events() if e["run_id"] == run_id and e["type"] != "error"]
    stats = [json.loads(m.payload) for m in sub.on(f"{BASE}/stats")]
    assert events and {e["method"] for e in events} == {"solid"}
    assert stats and {s["method"] for s in stats if s["run_id"] == run_id} == {"solid"}
    assert [m.payload for m in sub.on(f"{BASE}/method/state")][:1] == [b"solid"]
    sub.close()
