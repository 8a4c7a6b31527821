"""Consent in events and stats (issue 16.3): a track that becomes visible gives an `exempt` event (the
enrolled name only with consent.publish_names), one covered again an `anonymized` event; stats count
exempt and anonymized faces."""
import numpy as np
from anoncam.mqtt.events import TrackEvents
from anoncam.stats import Stats
from anoncam.types import Face, FrameResult

IMG = np.zeros((48, 64, 3), np.uint8)


def frame(i, methods, names=None):
    names = names or {}
    faces = [Face(track_id=t, box=np.array([1, 2, 30, 40], np.float32), detected=True, method=m,
                  consent_name=names.get(t)) for t, m in methods.items()]
    return FrameResult(index=i, timestamp=100.0 + i, image=IMG, status="ok", faces=faces)


def run(frames):
    ev, st, out = TrackEvents(update_every_s=1e9), Stats(), []
    for r in frames:
        out += ev.frame(r)
        st.frame(r.status, {}, len(r.faces), sum(f.method is None for f in r.faces))
    return out, st


def test_exempt_and_anonymized_events_without_names():
    out, st = run([frame(0, {1: "blur", 2: "blur"}), frame(1, {1: "blur", 2: "blur"}),
                   frame(2, {1: None, 2: "blur"}), frame(3, {1: None, 2: "blur"}), frame(4, {1: "blur"})])
    changes = [(e["type"], e["frame"], e["track_id"]) for e in out if e["type"] in ("exempt", "anonymized")]
    assert changes == [("exempt", 2, 1), ("anonymized", 4, 1)]
    assert all("name" not in e for e in out)
    s = st.summary()
    assert (s["faces_exempt"], s["faces_anonymized"]) == (2, 7)


def test_name_only_when_the_policy_set_it():
    out, _ = run([frame(0, {7: "blur"}), frame(1, {7: None}, {7: "alice"})])
    ex = [e for e in out if e["type"] == "exempt"]
    assert ex == [{"type": "exempt", "ts": 101.0, "frame": 1, "track_id": 7, "name": "alice"}]


def test_a_new_visible_track_appears_then_is_exempt():
    out, _ = run([frame(0, {3: None})])
    assert [e["type"] for e in out] == ["appear", "exempt"]
