"""Disk sink: segments and stills on schedule, retention by size, age and free space."""
import os
import time

import cv2
import numpy as np
from anoncam.sinks.disk import DiskSink
from anoncam.types import FrameResult
from conftest import make_config


def frames(n, shape=(120, 160, 3)):
    rng = np.random.default_rng(0)
    for i in range(n):
        yield FrameResult(i, 1_700_000_000 + i / 10, rng.integers(0, 255, shape, np.uint8), "ok")


def test_segments_and_stills_on_schedule(tmp_path):
    cfg = make_config(output={"dir": str(tmp_path), "stills": {"every_s": 1.0},
                              "video": {"segment_s": 2.0}}).output
    sink = DiskSink(cfg, "cam", fps=10)
    for r in frames(45):
        sink.write(r)
    sink.close()
    segs = sorted((tmp_path / "cam" / "video").glob("*.mp4"))
    assert [int(cv2.VideoCapture(str(s)).get(cv2.CAP_PROP_FRAME_COUNT)) for s in segs] == [20, 20, 5]
    assert len(list((tmp_path / "cam" / "stills").glob("*.jpg"))) == 5  # frames 0, 10, 20, 30, 40


def test_size_cap_deletes_oldest_first(tmp_path):
    cfg = make_config(output={"dir": str(tmp_path), "stills": {"every_s": 0.1}, "video": {"enabled": False},
                              "retention": {"max_bytes": 200_000, "min_free_bytes": 0}}).output
    sink = DiskSink(cfg, "cam", fps=10)
    for r in frames(60):
        sink.write(r)
    files = sorted((tmp_path / "cam" / "stills").glob("*.jpg"))
    assert sum(f.stat().st_size for f in files) <= 200_000
    assert files[-1].name.endswith("_00000059.jpg")  # the newest survive
    assert sink.files_deleted == 60 - len(files) > 0


def test_age_and_free_space_floor(tmp_path):
    stills = tmp_path / "cam" / "stills"
    cfg = make_config(output={"dir": str(tmp_path), "stills": {"every_s": 0.1}, "video": {"enabled": False},
                              "retention": {"max_age_h": 1.0, "min_free_bytes": 0}}).output
    sink = DiskSink(cfg, "cam", fps=10)
    gen = frames(3)
    sink.write(next(gen))
    old = next(stills.glob("*.jpg"))
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    sink.write(next(gen))
    assert not old.exists()
    # a free-space floor above what the disk has: everything but the newest file goes
    sink.cfg.retention.min_free_bytes = 1 << 62
    sink.write(next(gen))
    assert [f.name[-12:] for f in stills.glob("*.jpg")] == ["00000002.jpg"]


def test_output_folders_are_private(tmp_path):
    """Folders the camera creates for recordings of people are 0750, whatever the umask lets through;
    a folder that already exists keeps its mode."""
    import os
    import stat

    from anoncam.config import OutputConfig
    from anoncam.sinks.disk import DiskSink
    (tmp_path / "existing").mkdir(mode=0o755)
    os.chmod(tmp_path / "existing", 0o755)
    old = os.umask(0o022)
    try:
        DiskSink(OutputConfig(dir=tmp_path / "existing" / "new" / "out"), "cam0", 25.0)
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)
    assert mode(tmp_path / "existing") == 0o755
    for p in [tmp_path / "existing" / "new", tmp_path / "existing" / "new" / "out",
              tmp_path / "existing" / "new" / "out" / "cam0", tmp_path / "existing" / "new" / "out" / "cam0" / "stills"]:
        assert mode(p) == 0o750, p
