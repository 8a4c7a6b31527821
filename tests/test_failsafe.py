"""Fail closed: a fault or an overrun covers (or drops) the whole frame; never passes it through."""
import subprocess

import cv2
import numpy as np
import pytest
from anoncam.config import ConfigError, validate
from anoncam.pipeline import Pipeline
from anoncam.runner import Runner
from conftest import ANONCAM, make_config


class BrokenPolicy:
    """A decision step that fails, as a bug or a model fault would."""

    def decide(self, frame, faces, sidecar):
        raise ValueError("decision failed")


def test_fault_covers_the_whole_frame(media, models):
    pipe = Pipeline.from_config(make_config(), policy=BrokenPolicy())
    frame = cv2.imread(str(media["group2"]))
    res = pipe.process(frame, 0)
    assert res.status == "covered" and res.reason == "error: ValueError"
    assert (frame == np.array(pipe.cfg.anonymize.solid_color, np.uint8)).all()


def test_fault_can_drop_instead(media, models):
    """Dropped means covered, then not written: the caller's buffer (a camera's, which its encoder
    and preview still get) holds nothing of the frame."""
    pipe = Pipeline.from_config(make_config(failsafe={"on_failure": "drop"}), policy=BrokenPolicy())
    frame = cv2.imread(str(media["group2"]))
    res = pipe.process(frame, 0)
    assert res.status == "dropped" and res.image is None
    assert (frame == np.array(pipe.cfg.anonymize.solid_color, np.uint8)).all()


def test_overrun_fails_closed(media, models):
    pipe = Pipeline.from_config(make_config(failsafe={"budget_ms": 0.01}))
    frame = cv2.imread(str(media["group3"]))
    res = pipe.process(frame, 0)
    assert res.status == "covered" and res.reason == "over budget"
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) == 1


def test_within_budget_passes(media, models):
    # a budget no loaded test machine reaches: this checks that a normal frame is not failed
    pipe = Pipeline.from_config(make_config(failsafe={"budget_ms": 600_000}))
    res = pipe.process(cv2.imread(str(media["group3"])), 0)
    assert res.status == "ok" and len(res.faces) == 3


@pytest.mark.parametrize("bad", [None, np.zeros((0, 0, 3), np.uint8), np.zeros((50, 50), np.uint8),
                                 np.zeros((50, 50, 3), np.float32)])
def test_corrupt_frame_is_dropped(models, bad):
    res = Pipeline.from_config(make_config()).process(bad, 0)
    assert res.status == "dropped" and res.image is None and res.reason == "corrupt frame"


def test_corrupt_frame_is_blanked(media, models):
    """A frame of the wrong shape is dropped, and what it held does not survive in the buffer."""
    frame = cv2.imread(str(media["group2"]), cv2.IMREAD_GRAYSCALE)
    res = Pipeline.from_config(make_config()).process(frame, 0)
    assert res.status == "dropped" and res.image is None and not frame.any()


def test_dropped_frames_reach_no_sink(media, models, tmp_path):
    cfg = make_config(camera={"source": str(media["cap13"]), "loop": False, "realtime": False},
                      failsafe={"on_failure": "drop"}, output={"dir": str(tmp_path)})
    runner = Runner(cfg, Pipeline.from_config(cfg, policy=BrokenPolicy()))
    stats = runner.run(max_frames=20)
    assert stats.counts["dropped"] == 20
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_privacy_zones_are_always_covered(media, models):
    zone = [(0.0, 0.0), (0.5, 0.0), (0.5, 0.25), (0.0, 0.25)]
    pipe = Pipeline.from_config(make_config(anonymize={"privacy_zones": [zone], "solid_color": [0, 0, 255]}))
    frame = cv2.imread(str(media["coffee"]))
    h, w = frame.shape[:2]
    pipe.process(frame, 0)
    assert (frame[: h // 4 - 1, : w // 2 - 1] == [0, 0, 255]).all()
    assert not (frame[h // 2:, w // 2 + 2:] == [0, 0, 255]).all()


def test_no_config_key_turns_detection_off(tmp_path, cli_env):
    """The old test-only switch `testing.blind_frames` (detector off on chosen frames) is rejected,
    by `validate` and by `anoncam config check` (exit 2), naming the key."""
    with pytest.raises(ConfigError, match="unknown key 'testing'"):
        validate({"testing": {"blind_frames": [[0, 1000000]]}}, "camera.yaml")
    cfg = tmp_path / "camera.yaml"
    cfg.write_text("testing:\n  blind_frames: [[0, 1000000]]\n")
    p = subprocess.run([*ANONCAM, "config", "check", str(cfg)], env=cli_env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 2 and "unknown key 'testing'" in p.stderr and str(cfg) in p.stderr
