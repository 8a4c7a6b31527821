"""quantize/: real models, real media, real onnxruntime quantization; every test can fail."""
from __future__ import annotations

import json
import logging
import subprocess
import sys

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from anoncam import assets, precision

import quantize
from quantize import core, drift

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def yunet_build(models, media, tmp_path_factory):
    root = tmp_path_factory.mktemp("int8")
    return root, quantize.build("yunet", out_root=root, force=True, log=lambda s: None)


def test_int8_detector_passes_recall_gate_on_group_photos(yunet_build):
    root, rep = yunet_build
    p = rep["metrics"]["photos"]
    assert p["faces"] == 23 and p["fp32_found"] == 23
    assert p["fp32_recall"] - p["int8_recall"] <= 1.0, p["per_photo"]
    assert p["int8_false"] == 0
    assert p["box_iou_mean"] > 0.9
    assert rep["installed"] is True
    model = root / "yunet" / rep["key"] / "model.onnx"
    assert model.is_file() and assets.sha256_file(model) == rep["int8"]["sha256"]
    ops = rep["int8"]["ops"]
    assert ops.get("QuantizeLinear", 0) > 20 and ops.get("DequantizeLinear", 0) > 50  # static QDQ
    # per-channel: a Conv weight's scale has one value per output channel
    import onnx
    m = onnx.load(str(model))
    scales = [i for i in m.graph.initializer if i.name.endswith("_scale") and len(i.dims) == 1 and i.dims[0] > 1]
    assert scales, "no per-channel weight scales"
    assert json.loads((root / "yunet" / rep["key"] / "report.json").read_text())["installed"] is True


def test_only_the_conv_on_the_image_stays_float(yunet_build):
    """Recipe v2: YuNet's first conv (3 input channels, reading the image) runs fp32, every other
    conv is fed by DequantizeLinear (int8 weights)."""
    import onnx
    root, rep = yunet_build
    m = onnx.load(str(root / "yunet" / rep["key"] / "model.onnx"))
    producer = {o: n.op_type for n in m.graph.node for o in n.output}
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    plain = [n.name for n in convs if producer.get(n.input[1]) != "DequantizeLinear"]
    assert plain == core.image_convs(core.source("yunet").model) == ["Conv_0"]
    assert len(convs) > 40 and "Conv" in rep["int8"]["float_ops"]


def test_int8_build_is_deterministic(yunet_build, tmp_path):
    _, rep = yunet_build
    again = quantize.build("yunet", out_root=tmp_path, force=True, log=lambda s: None)
    assert again["key"] == rep["key"] and again["int8"]["sha256"] == rep["int8"]["sha256"]


def test_failing_gate_is_not_installed(models, media, tmp_path):
    """An impossible gate (recall must rise by 1000 points): report written, model withdrawn, exit 1."""
    src = core.source("yunet")
    key = f"{src.sha256[:16]}-{precision.settings_digest('yunet')[:12]}"
    stale = tmp_path / "yunet" / key / "model.onnx"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an earlier build")
    proc = subprocess.run([sys.executable, "-m", "quantize", "build", "yunet", "--out-root", str(tmp_path),
                           "--gate=recall_drop_points=-1000"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1, proc.stderr
    assert "NOT installed" in proc.stderr
    rep = json.loads((stale.parent / "report.json").read_text())
    assert rep["installed"] is False and not all(g["pass"] for g in rep["gates"])
    assert not stale.exists()
    assert not list(tmp_path.rglob("*.onnx"))


def test_precision_int8_loads_the_int8_file(pipeline_factory):
    p8 = pipeline_factory(runtime={"precision": "int8", "threads": 1})
    p32 = pipeline_factory(runtime={"precision": "fp32", "threads": 1})
    ident8 = precision.identity(p8.detector.backend.session)
    sha = assets.load_manifest("models")["yunet"].sha256
    path = precision.int8_path("yunet", sha)
    assert ident8["anoncam.precision"] == "int8" and ident8["anoncam.fp32_sha256"] == sha
    assert ident8["anoncam.key"] == path.parent.name and path.is_file()
    assert precision.identity(p32.detector.backend.session) == {}
    x = np.random.default_rng(1).random((1, 3, 256, 320), np.float32) * 255
    a, b = p8.detector.backend.run(x), p32.detector.backend.run(x)
    assert any(not np.array_equal(u, v) for u, v in zip(a, b))  # really two different models


def test_missing_int8_says_it_runs_fp32(models, tmp_path, monkeypatch, caplog):
    """A cache without the int8 file and no build: the fp32 file, with a WARNING that says so."""
    (tmp_path / "blobs").symlink_to(assets.cache_dir() / "blobs")
    monkeypatch.setenv("ANONCAM_CACHE", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="anoncam.precision"):
        path = precision.model_file("yunet", "int8", build=False)
    assert path == assets.model_path("yunet")
    assert "RUNNING FP32" in caplog.text and "anoncam models quantize" in caplog.text


def test_sface_block_quantized_rewrite_matches_opencv(models, media):
    """The int8bq file rewritten to plain fp32 loads in onnxruntime and gives OpenCV's embeddings."""
    src = core.source("sface")
    assert not any(n.op_type == "DequantizeLinear" for n in src.model.graph.node)
    sess = core.session(src.model)
    rec = cv2.FaceRecognizerSF.create(str(assets.model_path("sface")), "")
    xs = drift._aligned([cv2.imread(str(media["group4"]))])
    assert len(xs) == 4
    for x in xs:
        ours = sess.run(None, {sess.get_inputs()[0].name: x})[0].reshape(-1)
        crop = cv2.cvtColor(x[0].transpose(1, 2, 0).astype(np.uint8), cv2.COLOR_RGB2BGR)
        ref = rec.feature(crop).reshape(-1)
        assert ours @ ref / (np.linalg.norm(ours) * np.linalg.norm(ref)) > 0.999


def test_generator_onnx_is_quantized_and_gated(models, media, tmp_path):
    """The generator tool on an ONNX export of the generator network (untrained, seed 0, as
    models/generator/train.py exports it), since the trained file is not shipped yet."""
    import torch  # the dev extra installs it (torch==2.13.0 CPU)
    sys.path.insert(0, str(REPO / "models" / "generator"))
    import train
    torch.manual_seed(0)
    onnx_path = tmp_path / "generator.onnx"
    train.export(train.Generator(), onnx_path)
    rep = quantize.build("generator", generator=onnx_path, out_root=tmp_path / "int8", log=lambda s: None)
    m = rep["metrics"]
    assert m["faces"] >= 20 and m["psnr_db_mean"] >= 30 and 0.9 < m["ssim_mean"] <= 1
    assert rep["installed"] and "ConvTranspose" not in rep["int8"]["ops"]
    sess = ort.InferenceSession(rep["int8"]["path"], providers=["CPUExecutionProvider"])
    assert sess.get_modelmeta().custom_metadata_map["anoncam.precision"] == "int8"
    bad = quantize.build("generator", generator=onnx_path, out_root=tmp_path / "int8b", gates={"psnr_db": 1000},
                         log=lambda s: None)
    assert bad["installed"] is False and not (tmp_path / "int8b" / "generator" / bad["key"] / "model.onnx").exists()
