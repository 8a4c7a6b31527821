"""The daemon writes nothing raw: run it on a clip into a fresh folder with a fresh TMPDIR, then check
every file written anywhere there against the original frames."""
import os
import re
import signal
import subprocess
import time

import cv2
import yaml
from conftest import ANONCAM
from helpers import is_hidden, iter_frames, video_reference

CLIP = "cap13"


def test_daemon_output_has_no_uncovered_face(media, tmp_path, cli_env):
    out = tmp_path / "out"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({
        "camera": {"name": "door"},
        "output": {"stills": {"every_s": 1.0}, "video": {"segment_s": 8.0}},
        "log": {"format": "json", "summary_every_s": 1.0},
    }))
    proc = subprocess.run([*ANONCAM, "run", "--config", str(cfg), "--source", str(media[CLIP]),
                           "--output", str(out), "--no-realtime"],
                          env=cli_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    originals = list(iter_frames(media[CLIP]))
    boxes = video_reference(media[CLIP])
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p != cfg]
    videos = sorted(p for p in files if p.suffix == ".mp4")
    stills = sorted(p for p in files if p.suffix == ".jpg")
    others = [p for p in files if p not in videos and p not in stills]
    assert others == [], f"unexpected files written: {others}"
    assert len(videos) >= 3 and len(stills) >= 10
    assert all(p.parent == out / "door" / "video" for p in videos)
    assert all(p.parent == out / "door" / "stills" for p in stills)

    # video segments, in order, hold every frame exactly once
    i = leaks = 0
    for v in videos:
        for frame in iter_frames(v):
            leaks += any(not is_hidden(originals[i], frame, b) for b in boxes[i])
            i += 1
    assert i == len(originals)
    assert leaks == 0
    for s in stills:
        idx = int(re.search(r"_(\d{8})\.jpg$", s.name).group(1))
        img = cv2.imread(str(s))
        assert not any(not is_hidden(originals[idx], img, b) for b in boxes[idx]), s.name
    # logs carry counts, never image data
    assert '"frames"' in proc.stderr and len(proc.stderr) < 200_000


def test_daemon_stops_cleanly_on_sigterm(media, tmp_path, cli_env):
    """SIGTERM mid-run: the open segment is finished and renamed, no .part file is left."""
    out = tmp_path / "out"
    proc = subprocess.Popen([*ANONCAM, "run", "--source", str(media["franck"]), "--output", str(out)],
                            env=cli_env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not list(out.rglob("*.jpg")):
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert "stopped" in err
    names = [p.name for p in out.rglob("*") if p.is_file()]
    assert any(n.endswith(".mp4") for n in names)
    assert not [n for n in names if ".part" in n or n.endswith(".tmp")]
    seg = next(out.rglob("*.mp4"))
    assert cv2.VideoCapture(str(seg)).get(cv2.CAP_PROP_FRAME_COUNT) > 0
    assert os.listdir(cli_env["TMPDIR"]) == []
