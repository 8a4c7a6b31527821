"""Every model file the runtime opens is checked against a sha256 recorded when it was fetched or
made (issue 12 point 2): a tampered file stops start-up, exit 3 with its path and the expected sha256,
and nothing is written. Real files: the int8 YuNet built by quantize/, SFace's derived fp32 graph,
the identity bank; bytes flipped inside their weights, not the header."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import onnx
import pytest
from anoncam import assets, precision
from anoncam.attributes import Likeness, sface_file
from anoncam.pipeline import Pipeline
from conftest import ANONCAM, make_config

import quantize


def flip_weights(path) -> str:
    """Flip 64 bytes in the middle of the largest weight of an ONNX file; the file still parses."""
    m = onnx.load(str(path))
    w = max((i for i in m.graph.initializer if i.raw_data), key=lambda i: len(i.raw_data))
    data = bytearray(path.read_bytes())
    at = data.find(w.raw_data)
    assert at > 0 and len(w.raw_data) >= 1024, (w.name, at)
    mid = at + len(w.raw_data) // 2
    data[mid:mid + 64] = bytes(b ^ 0x5A for b in data[mid:mid + 64])
    path.write_bytes(bytes(data))
    onnx.load(str(path))  # still a valid model: only weight values changed
    return w.name


@pytest.fixture(scope="module")
def int8_yunet(models, media):
    """The int8 YuNet in the real cache (built by quantize/ if it is not yet): (model, report)."""
    rep = quantize.build("yunet", log=lambda s: None)
    assert rep["installed"], rep["gates"]
    sha = assets.load_manifest("models")["yunet"].sha256
    return precision.int8_path("yunet", sha), precision.report_path("yunet", sha)


def _cache(tmp_path, monkeypatch):
    """A cache that shares the real verified blobs; the caller copies in what it tampers with."""
    real = assets.cache_dir()
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "blobs").symlink_to(real / "blobs")
    monkeypatch.setenv("ANONCAM_CACHE", str(cache))
    return real, cache


@pytest.fixture
def tampered_int8(int8_yunet, tmp_path, monkeypatch):
    model, report = int8_yunet
    real, cache = _cache(tmp_path, monkeypatch)
    folder = cache / model.parent.relative_to(real)
    shutil.copytree(model.parent, folder)
    flip_weights(folder / "model.onnx")
    expected = json.loads(report.read_text())["int8"]["sha256"]
    assert assets.sha256_file(model) == expected  # the real one is intact
    return folder / "model.onnx", expected, cache


GENERATIVE_FP32 = "anonymize:\n  method: generative\nruntime:\n  precision: fp32\n"


def _anonymize(tmp_path, media, config: str, env_cache):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(config)
    out = tmp_path / "out" / "astro.png"
    env = dict(os.environ, ANONCAM_CACHE=str(env_cache), TMPDIR=str(tmp_path))
    p = subprocess.run([*ANONCAM, "anonymize", str(media["astronaut"]), "-o", str(out), "-q",
                        "--config", str(cfg)], env=env, capture_output=True, text=True, timeout=600)
    return p, out


def test_tampered_int8_detector_stops_start_up(tampered_int8):
    path, expected, _ = tampered_int8
    with pytest.raises(assets.AssetError) as e:
        Pipeline.from_config(make_config(runtime={"precision": "int8", "threads": 1}))
    assert str(path) in str(e.value) and expected in str(e.value)


def test_tampered_int8_detector_cli_exit_3_nothing_written(tampered_int8, tmp_path, media):
    path, expected, cache = tampered_int8
    p, out = _anonymize(tmp_path, media, "runtime:\n  precision: int8\n", cache)
    assert p.returncode == 3, p.stderr
    assert str(path) in p.stderr and expected in p.stderr
    assert not out.exists() and not out.parent.exists()


def test_int8_without_recorded_sha256_stops_start_up(tampered_int8):
    path, _, _ = tampered_int8
    (path.parent / "report.json").unlink()
    with pytest.raises(assets.AssetError, match="no sha256 recorded") as e:
        precision.model_file("yunet", "int8")
    assert str(path) in str(e.value)


def test_intact_int8_detector_loads(int8_yunet, tmp_path, monkeypatch):
    model, _ = int8_yunet
    real, cache = _cache(tmp_path, monkeypatch)
    shutil.copytree(model.parent, cache / model.parent.relative_to(real))
    assert precision.model_file("yunet", "int8") == cache / model.relative_to(real)


@pytest.fixture
def tampered_sface(models, tmp_path, monkeypatch):
    src = sface_file()  # made (and recorded) in the real cache if it is not yet
    expected = assets.read_record(src)
    assert expected == assets.sha256_file(src)
    real, cache = _cache(tmp_path, monkeypatch)
    dst = cache / src.relative_to(real)
    dst.parent.mkdir(parents=True)
    shutil.copyfile(src, dst)
    shutil.copyfile(assets.record_path(src), assets.record_path(dst))
    flip_weights(dst)
    return dst, expected, cache


def test_tampered_sface_graph_stops_start_up(tampered_sface):
    path, expected, _ = tampered_sface
    with pytest.raises(assets.AssetError) as e:
        Likeness()
    assert str(path) in str(e.value) and expected in str(e.value)


def test_tampered_sface_graph_cli_exit_3(tampered_sface, tmp_path, media):
    path, expected, cache = tampered_sface
    p, out = _anonymize(tmp_path, media, GENERATIVE_FP32, cache)
    assert p.returncode == 3, p.stderr
    assert str(path) in p.stderr and expected in p.stderr and not out.exists()


def test_sface_graph_without_record_is_made_again(tampered_sface):
    """No record: the file is not trusted but derived again from the verified shipped file."""
    path, expected, _ = tampered_sface
    assets.record_path(path).unlink()
    assert sface_file() == path and assets.sha256_file(path) == expected == assets.read_record(path)


def test_tampered_identity_bank_cli_exit_3(models, tmp_path, media):
    """The bank (registry `local`) is checked against the manifest's sha256."""
    shipped = assets.model_path("generator_identities")
    models_dir = tmp_path / "models"
    shutil.copytree(shipped.parents[1], models_dir, ignore=shutil.ignore_patterns("*.py"))
    bank = models_dir / "generator" / "identities.npz"
    data = bytearray(bank.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bank.write_bytes(bytes(data))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(GENERATIVE_FP32)
    env = dict(os.environ, ANONCAM_MODELS_DIR=str(models_dir), TMPDIR=str(tmp_path))
    out = tmp_path / "out.png"
    p = subprocess.run([*ANONCAM, "anonymize", str(media["astronaut"]), "-o", str(out), "-q", "--config", str(cfg)],
                       env=env, capture_output=True, text=True, timeout=600)
    sha = assets.load_manifest("models")["generator_identities"].sha256
    assert p.returncode == 3 and str(bank) in p.stderr and sha in p.stderr, p.stderr
    assert not out.exists()


def test_broken_detector_tflite_exit_3_with_path(models, tmp_path, media):
    """A user's TFLite that does not load (here: truncated) is an exit 3 naming it, not a traceback."""
    bad = tmp_path / "yunet.tflite"
    bad.write_bytes(assets.model_path("facemesh").read_bytes()[:5000])
    p, out = _anonymize(tmp_path, media, f"runtime:\n  detector_tflite: {bad}\n", assets.cache_dir())
    assert p.returncode == 3, p.stderr
    assert str(bad) in p.stderr and assets.sha256_file(bad) in p.stderr and "Traceback" not in p.stderr
    assert not out.exists()


def test_detector_tflite_pinned_sha256_mismatch(models, tmp_path):
    f = tmp_path / "yunet.tflite"
    shutil.copyfile(assets.model_path("facemesh"), f)
    pin = "0" * 64
    with pytest.raises(assets.AssetError) as e:
        Pipeline.from_config(make_config(runtime={"detector_tflite": str(f), "detector_tflite_sha256": pin}))
    assert str(f) in str(e.value) and pin in str(e.value)
