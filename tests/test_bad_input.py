"""Bad input gets a clear error and loses nothing; no partial output file is left behind."""
import fractions
import os
import shutil
import subprocess
import time

import cv2
import numpy as np
import pytest
from anoncam import assets
from anoncam.capture import open_source
from anoncam.capture.files import read_image
from anoncam.config import ConfigError, load, validate
from anoncam.mqtt.connection import Connection
from anoncam.mqtt.spool import Spool
from anoncam.pipeline import Pipeline
from anoncam.runner import Runner
from conftest import ANONCAM, make_config
from helpers import iter_frames
from test_mqtt import Sub, broker  # noqa: F401 (fixture)


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


def test_broken_consent_model_stops_a_consent_run(tmp_path, models, media, cli_env):
    """FaceRes (consent's video check) is sha256-checked when a run with consent starts."""
    cache = _cache_with(tmp_path, models, "faceres", "corrupt")
    a = assets.load_manifest("models")["faceres"]
    env = dict(cli_env, ANONCAM_CACHE=str(cache))
    out = tmp_path / "out"
    p = run(["run", "--source", str(media["cap13"]), "--output", str(out), "--max-frames", "5",
             "--gallery", str(tmp_path / "consent.json")], env)
    assert p.returncode == 3
    assert str(cache / "blobs" / a.sha256 / a.filename) in p.stderr and a.sha256 in p.stderr
    assert not out.exists() or not any(out.rglob("*.*"))


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


# --- issue 17: clear errors instead of tracebacks, inputs that were mishandled ----------------------
def _clear_error(p, code: int, *names: str) -> None:
    assert p.returncode == code, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    for n in names:
        assert n in p.stderr, (n, p.stderr[-2000:])


def test_unusable_output_paths_exit_2(tmp_path, media, cli_env):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    src = str(media["cap13"])
    p = run(["run", "--source", src, "--output", str(afile), "--max-frames", "2"], cli_env)
    _clear_error(p, 2, "output.dir", str(afile))
    p = run(["run", "--source", src, "--output", "/proc/anoncam-out", "--max-frames", "2"], cli_env)
    _clear_error(p, 2, "output.dir", "/proc/anoncam-out")
    cfg = tmp_path / "spool.yaml"
    cfg.write_text("mqtt:\n  spool:\n    dir: /proc/anoncam-spool\n")
    p = run(["run", "--config", str(cfg), "--mqtt", "mqtt://127.0.0.1:1", "--source", src,
             "--output", str(tmp_path / "o"), "--max-frames", "2"], cli_env)
    _clear_error(p, 2, "mqtt.spool.dir", "/proc/anoncam-spool")
    still = tmp_path / "in" / "a.png"
    still.parent.mkdir()
    shutil.copy(media["astronaut"], still)
    for out in (afile, "/proc/anoncam-out"):  # as the folder of a folder's outputs
        p = run(["anonymize", str(still.parent), "-o", str(out), "-q"], cli_env)
        _clear_error(p, 2, str(out))
    p = run(["anonymize", str(still), "-o", "/proc/anoncam.png", "-q"], cli_env)
    _clear_error(p, 2, "/proc")
    p = run(["anonymize", str(still), "-o", str(tmp_path / "o.png"), "--stats", str(tmp_path), "-q"], cli_env)
    _clear_error(p, 2, "--stats", str(tmp_path))
    assert not (tmp_path / "o.png").exists(), "a usage error stops before any work"
    assert afile.read_text() == "keep me"


def test_detector_tflite_that_is_not_a_model_exits_3(tmp_path, media, cli_env):
    bogus = tmp_path / "yunet.tflite"
    bogus.write_bytes(b"TFL3" + bytes(range(256)) * 8)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"runtime:\n  detector_tflite: {bogus}\n")
    p = run(["run", "--config", str(cfg), "--source", str(media["cap13"]), "--output", str(tmp_path / "o"),
             "--max-frames", "2"], cli_env)
    _clear_error(p, 3, "runtime.detector_tflite", str(bogus))


def test_one_unreadable_image_as_source_is_an_error(tmp_path, cli_env):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    p = run(["run", "--source", str(bad), "--output", str(tmp_path / "o"), "--max-frames", "3"], cli_env)
    _clear_error(p, 1, str(bad), "not a readable image")
    p = run(["anonymize", str(bad), "-o", str(tmp_path / "o.jpg"), "-q"], cli_env)
    _clear_error(p, 1, str(bad))
    assert not (tmp_path / "o.jpg").exists()


def test_folder_of_unreadable_images_as_source_is_an_error(tmp_path, media, cli_env):
    d = tmp_path / "in"
    d.mkdir()
    for name in ("a.jpg", "b.png"):
        (d / name).write_bytes(b"not an image at all")
    p = run(["run", "--source", str(d), "--output", str(tmp_path / "o"), "--max-frames", "3"], cli_env)
    _clear_error(p, 1, str(d), "none of its 2 image(s) can be read")
    shutil.copy(media["astronaut"], d / "c.png")  # one good image: the bad ones are dropped frames
    p = run(["run", "--source", str(d), "--output", str(tmp_path / "o"), "--max-frames", "3"], cli_env)
    assert p.returncode == 0, p.stderr[-2000:]


def test_output_that_is_the_input_is_refused(tmp_path, media, cli_env):
    """-o naming the input however spelled (same path, ./, symlink, hard link, a folder it lands in)."""
    d = tmp_path / "in"
    d.mkdir()
    src = d / "a.png"
    shutil.copy(media["astronaut"], src)
    before = src.read_bytes()
    (tmp_path / "link.png").symlink_to(src)
    os.link(src, tmp_path / "hard.png")
    for out in (src, d / "." / "a.png", tmp_path / "in" / ".." / "in" / "a.png", tmp_path / "link.png",
                tmp_path / "hard.png"):
        p = run(["anonymize", str(src), "-o", str(out), "-q"], cli_env)
        _clear_error(p, 2, "never overwritten")
    p = run(["anonymize", str(src), "-o", str(d), "-q"], cli_env, cwd=tmp_path)  # folder output: d/a.png
    _clear_error(p, 2, "never overwritten")
    p = run(["anonymize", "in", "-o", ".", "-q"], cli_env, cwd=tmp_path)  # ./in/a.png is the input
    _clear_error(p, 2, "never overwritten")
    assert src.read_bytes() == before and (tmp_path / "hard.png").read_bytes() == before


def test_motion_photo_jpeg_with_trailing_data_is_read(tmp_path, media):
    """A JPEG followed by other data (a motion photo's video) decodes to the JPEG's picture; the same
    JPEG cut short is still refused."""
    img = cv2.imread(str(media["astronaut"]))
    ok, jpg = cv2.imencode(".jpg", img)
    jpg = jpg.tobytes()
    video = media["cap13"].read_bytes()[:200_000]
    motion = tmp_path / "motion.jpg"
    motion.write_bytes(jpg + video)
    got = read_image(motion)
    assert np.array_equal(got, cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(jpg[:-100] + video)  # the JPEG's end is missing: the video is not its end
    with pytest.raises(ValueError, match="truncated JPEG"):
        read_image(cut)


def _vfr_clip(path, n: int = 95, gaps=(20, 50, 80)):
    """A variable-frame-rate Matroska clip, as the issue's (24 tbr, 95 frames decode, the container's
    duration x rate says 98): frames 1/24 s apart except 3 gaps of 2/24 s. Each frame's grey level is
    its index (x2), to check order."""
    import av
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=24, options={"crf": "10"})
        s.width, s.height, s.pix_fmt = 160, 120, "yuv420p"
        s.time_base = fractions.Fraction(1, 1000)
        t = 0
        for i in range(n):
            f = av.VideoFrame.from_ndarray(np.full((120, 160, 3), 2 * i, np.uint8), format="bgr24")
            f.pts, f.time_base = round(t * 1000), s.time_base
            out.mux(s.encode(f))
            t += (2 if i in gaps else 1) / 24
        out.mux(s.encode())


def test_variable_frame_rate_clip_keeps_its_decoded_frame_count(tmp_path, cli_env):
    src = tmp_path / "vfr.mkv"
    _vfr_clip(src)
    cap = cv2.VideoCapture(str(src))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 98  # the container's estimate is too high
    cap.release()
    decoded = list(iter_frames(src))
    assert len(decoded) == 95
    out = tmp_path / "vfr_anon.mkv"
    p = run(["anonymize", str(src), "-o", str(out), "-q"], cli_env)
    _clear_error(p, 0)
    got = list(iter_frames(out))
    assert len(got) == 95, "the output has the input's decoded frames, no padding"
    levels = [int(np.median(f)) for f in got]
    assert all(abs(a - 2 * i) <= 6 for i, a in enumerate(levels)), levels  # same frames, same order


def test_spool_ignores_stray_files_and_sets_bad_messages_aside(tmp_path):
    d = tmp_path / "spool"
    s = Spool(d, max_bytes=10_000)
    s.put("t/0", b"zero", retain=False)
    s.put("t/1", b"one", retain=False)
    (d / "000000000000.msg").write_bytes(b"{not json\npayload")  # a damaged header
    (d / "notes.txt").write_text("someone's notes")                 # stray files
    (d / "abc.msg").write_text("x")
    (d / "999999999999.msg").mkdir()
    again = Spool(d, max_bytes=10_000)
    assert len(again) == 2
    name, topic, payload, _ = again.next_unsent()
    assert (topic, payload) == ("t/1", b"one")
    again.done(name)
    assert again.next_unsent() is None and len(again) == 0
    assert (d / "000000000000.msg.bad").read_bytes() == b"{not json\npayload"  # kept aside, never resent
    assert (d / "notes.txt").exists() and (d / "abc.msg").exists()
    assert len(Spool(d, max_bytes=10_000)) == 0


def test_bad_spool_file_does_not_hold_up_stop(tmp_path, broker):  # noqa: F811
    """A real connection to a real mosquitto with a damaged message first in the spool: the good one
    after it is delivered, the damaged one is set aside, and close() does not wait close_timeout_s."""
    d = tmp_path / "spool"
    Spool(d, max_bytes=10_000).put("anoncam/door/events", b'{"n": 2}', retain=False)
    (d / "000000000000.msg").rename(d / "000000000002.msg")
    (d / "000000000000.msg").write_bytes(b"\xff\xfe garbage")
    sub = Sub(broker.port, topics=("anoncam/door/events",))
    cfg = validate({"mqtt": {"enabled": True, "host": "127.0.0.1", "port": broker.port,
                             "close_timeout_s": 120, "spool": {"dir": str(d)}}})
    conn = Connection(cfg.mqtt, "spool-test", "anoncam/door/available", d)
    conn.start(lambda: None, lambda t, p: None)
    assert sub.wait(lambda: [m.payload for m in sub.msgs] == [b'{"n": 2}'], 30)
    t = time.monotonic()
    conn.close()
    assert time.monotonic() - t < 60, "close waited for the damaged spool file"
    assert len(conn.spool) == 0 and sorted(p.name for p in d.iterdir()) == ["000000000000.msg.bad"]
    sub.close()


def test_still_declaring_too_many_pixels_is_refused_unread(tmp_path, media):
    """A small file can declare gigabytes (a PNG of zeros, or a JPEG whose header is edited): over
    MAX_PIXELS it is refused from its header, before anything is allocated; real stills pass."""
    import struct
    import zlib

    from anoncam.capture.files import MAX_PIXELS, declared_size

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))
    img = cv2.imread(str(media["astronaut"]))
    jpg = bytearray(cv2.imencode(".jpg", img)[1].tobytes())
    assert declared_size(bytes(jpg)) == (img.shape[1], img.shape[0])
    sof = jpg.index(b"\xff\xc0")
    jpg[sof + 5:sof + 9] = struct.pack(">HH", 20000, 20000)
    for name, data in (("bomb.png", png), ("bomb.jpg", bytes(jpg))):
        (tmp_path / name).write_bytes(data)
        assert 20000 * 20000 > MAX_PIXELS
        with pytest.raises(ValueError, match="20000x20000 pixels, over the"):
            read_image(tmp_path / name)
    assert read_image(media["astronaut"]).shape == img.shape


@pytest.mark.parametrize("escape", ["\\UFFFFFFFF", "\\U00110000"])
def test_yaml_escape_past_unicode_is_a_config_error(tmp_path, cli_env, escape):
    """Found by bench/fuzz.py: PyYAML raises OverflowError or ValueError (not a YAMLError) for a
    double-quoted escape past U+10FFFF; it is a config error naming the file, exit 2."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f'camera:\n  name: "{escape}"\n')
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(cfg)
    p = run(["config", "check", str(cfg)], cli_env)
    _clear_error(p, 2, str(cfg))
