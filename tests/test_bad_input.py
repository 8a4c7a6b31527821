"""Bad input gets a clear error and loses nothing; no partial output file is left behind."""
import shutil
import subprocess

import cv2
import pytest
from anoncam import assets
from anoncam.capture import open_source
from anoncam.config import ConfigError, load
from anoncam.pipeline import Pipeline
from anoncam.runner import Runner
from conftest import ANONCAM, make_config


def run(args, env, **kw):
    return subprocess.run([*ANONCAM, *args], env=env, capture_output=True, text=True, timeout=300, **kw)


def test_unknown_config_key_names_key_and_file(tmp_path, cli_env):
    cfg = tmp_path / "camera.yaml"
    cfg.write_text("detect:\n  size: 320\n  treshold: 0.5\n")
    with pytest.raises(ConfigError) as e:
        load(cfg)
    assert "detect.treshold" in str(e.value) and str(cfg) in str(e.value)
    p = run(["config", "check", str(cfg)], cli_env)
    assert p.returncode == 2 and "unknown key 'detect.treshold'" in p.stderr and str(cfg) in p.stderr
    p = run(["run", "--config", str(cfg), "--max-frames", "1"], cli_env)
    assert p.returncode == 2 and "detect.treshold" in p.stderr


def test_bad_config_value_is_named(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("anonymize:\n  method: smudge\n")
    with pytest.raises(ConfigError, match=r"anonymize\.method"):
        load(cfg)


def _cache_with(tmp_path, models, broken: str, how: str):
    """A cache where one model file is corrupt or missing; the others are real."""
    cache = tmp_path / "cache"
    for name, a in assets.load_manifest("models").items():
        dst = cache / "blobs" / a.sha256 / a.filename
        dst.parent.mkdir(parents=True)
        if name == broken and how == "missing":
            continue
        shutil.copy(models[name], dst)
        if name == broken:
            data = bytearray(dst.read_bytes())
            data[len(data) // 2] ^= 0xFF
            dst.write_bytes(bytes(data))
    return cache


@pytest.mark.parametrize("broken", ["yunet", "facemesh"])
@pytest.mark.parametrize("how", ["corrupt", "missing"])
def test_broken_model_stops_startup_with_path_and_sha(tmp_path, models, media, cli_env, broken, how):
    cache = _cache_with(tmp_path, models, broken, how)
    a = assets.load_manifest("models")[broken]
    env = dict(cli_env, ANONCAM_CACHE=str(cache))
    out = tmp_path / "out"
    p = run(["run", "--source", str(media["cap13"]), "--output", str(out), "--max-frames", "5"], env)
    assert p.returncode == 3
    assert str(cache / "blobs" / a.sha256 / a.filename) in p.stderr
    assert a.sha256 in p.stderr
    assert not out.exists() or not any(out.rglob("*.*"))
    p = run(["models", "verify"], env)
    assert p.returncode == 1 and a.sha256 in p.stderr


def test_unreadable_video_is_an_error_and_leaves_no_file(tmp_path, cli_env):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    out = tmp_path / "o" / "broken_anon.mp4"
    p = run(["anonymize", str(bad), "-o", str(out), "-q"], cli_env)
    assert p.returncode == 1
    assert "broken.mp4" in p.stderr
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_truncated_jpeg_is_an_error_and_leaves_no_file(tmp_path, media, cli_env):
    img = cv2.imread(str(media["astronaut"]))
    ok, jpg = cv2.imencode(".jpg", img)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(jpg.tobytes()[: len(jpg) // 2])
    out = tmp_path / "cut_anon.jpg"
    p = run(["anonymize", str(cut), "-o", str(out), "-q"], cli_env)
    assert p.returncode == 1 and "truncated JPEG" in p.stderr
    assert not out.exists()
    assert sorted(f.name for f in tmp_path.iterdir()) == ["cut.jpg", "tmp"]


def test_corrupt_frame_in_a_stream_is_dropped_and_counted(tmp_path, media, models):
    """A folder source with a truncated JPEG between good ones: that frame is dropped and counted,
    the others are anonymized and written."""
    src = tmp_path / "frames"
    src.mkdir()
    img = cv2.imread(str(media["astronaut"]))
    for i in range(4):
        cv2.imwrite(str(src / f"{i}.jpg"), img)
    data = (src / "2.jpg").read_bytes()
    (src / "2.jpg").write_bytes(data[: len(data) // 3])
    cfg = make_config(camera={"source": str(src), "loop": False, "realtime": False},
                      output={"dir": str(tmp_path / "out"), "stills": {"every_s": 0.01}})
    runner = Runner(cfg, Pipeline.from_config(cfg))
    stats = runner.run()
    assert stats.counts["frames"] == 4
    assert stats.counts["dropped"] == 1
    assert stats.counts["ok"] == 3
    assert len(list((tmp_path / "out" / "cam0" / "stills").glob("*.jpg"))) == 3


def test_missing_source_is_a_clear_error(tmp_path, cli_env):
    p = run(["run", "--source", str(tmp_path / "nope.mp4"), "--output", str(tmp_path / "o")], cli_env)
    assert p.returncode == 1 and "nope.mp4" in p.stderr and "no such file" in p.stderr


def test_unknown_sample_is_named(tmp_path):
    with pytest.raises(Exception, match="unknown sample"):
        open_source(make_config(camera={"source": "sample:nosuch"}).camera)
