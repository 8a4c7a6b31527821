"""One frame loop (anoncam/loop.py) for the daemon, `anoncam anonymize`, bench and the eval: none of
them or the sources calls Pipeline.process itself; a failing sink is counted and skipped on a
camera, and ends the run (the frame still counted) on a file."""
import ast
from pathlib import Path

import anoncam
import cv2
import pytest
from anoncam.capture import Frame
from anoncam.loop import FrameLoop
from anoncam.pipeline import Pipeline
from conftest import make_config

ROOT = Path(anoncam.__file__).parent
USERS = ["runner.py", "offline.py", "bench.py", "eval/core.py", "eval/realism_run.py"]
SOURCES = ["capture/__init__.py", "capture/files.py", "capture/opencv.py", "capture/picamera2.py"]


def calls(rel: str, name: str) -> list[int]:
    tree = ast.parse((ROOT / rel).read_text())
    return [n.lineno for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == name]


def test_only_the_frame_loop_runs_the_pipeline():
    assert calls("loop.py", "process")
    for rel in USERS + SOURCES:
        assert calls(rel, "process") == [], f"{rel} calls .process() at lines {calls(rel, 'process')}"
    for rel in USERS:
        assert "FrameLoop" in (ROOT / rel).read_text(), f"{rel} does not use the frame loop"


class Failing:
    def __init__(self):
        self.calls = 0

    def write(self, result):
        self.calls += 1
        raise OSError("disk full")

    def close(self):
        pass


class Kept:
    def __init__(self):
        self.statuses = []

    def write(self, result):
        self.statuses.append(result.status)

    def close(self):
        pass


def test_a_failing_sink_stops_a_file_but_not_a_camera(media, models):
    img = cv2.imread(str(media["group2"]))
    # a budget no loaded machine reaches: no frame may fail closed on time here
    pipe = Pipeline.from_config(make_config(anonymize={"method": "solid"}, failsafe={"budget_ms": 1e9}))

    def frames():
        return [Frame(i, 0.0, img.copy()) for i in range(3)]

    failing, kept = Failing(), Kept()
    camera = FrameLoop(pipe, [failing, kept], keep_going=True)
    camera.run(frames())
    assert camera.stats.counts["frames"] == 3 and camera.sink_errors == 3 and kept.statuses == ["ok"] * 3
    file = FrameLoop(pipe, [Failing()], live=False)
    with pytest.raises(OSError, match="disk full"):
        file.run(frames())
    assert file.stats.counts["frames"] == 1
