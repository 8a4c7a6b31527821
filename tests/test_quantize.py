"""quantize/: real models, real media, real onnxruntime quantization; every test can fail."""
from __future__ import annotations

import ast
import json
import logging
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from anoncam import assets, precision
from anoncam.pipeline import Pipeline
from conftest import ANONCAM, make_config

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


@pytest.fixture(scope="module")
def cli_build(models, media, tmp_path_factory):
    """`anoncam models quantize yunet` into a fresh cache (the model blobs linked in): a second build
    of the same model and settings as yunet_build, in another process and folder."""
    base = tmp_path_factory.mktemp("cli-build")
    (base / "cache").mkdir()
    (base / "tmp").mkdir()
    (base / "cache" / "blobs").symlink_to(assets.cache_dir() / "blobs")
    env = dict(os.environ, ANONCAM_CACHE=str(base / "cache"), TMPDIR=str(base / "tmp"))
    p = subprocess.run([*ANONCAM, "models", "quantize", "yunet"], env=env, capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, p.stderr
    return base / "cache", env, p


def test_int8_build_is_deterministic(yunet_build, cli_build):
    _, rep = yunet_build
    folder = next((cli_build[0] / "int8" / "yunet").glob("*/report.json")).parent
    again = json.loads((folder / "report.json").read_text())
    assert again["key"] == rep["key"] and again["int8"]["sha256"] == rep["int8"]["sha256"]
    assert assets.sha256_file(folder / "model.onnx") == rep["int8"]["sha256"]


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
    """A cache without the int8 file: the fp32 file, with a WARNING that says so; nothing is built."""
    (tmp_path / "blobs").symlink_to(assets.cache_dir() / "blobs")
    monkeypatch.setenv("ANONCAM_CACHE", str(tmp_path))
    for prec in ("int8", "auto"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="anoncam.precision"):
            path = precision.model_file("yunet", prec)
        assert path == assets.model_path("yunet")
        assert "RUNNING FP32" in caplog.text and "anoncam models quantize yunet" in caplog.text
    det = Pipeline.from_config(make_config(runtime={"threads": 1})).detector  # the default: auto
    assert precision.identity(det.backend.session) == {}
    assert not (tmp_path / "int8").exists()  # the runtime never builds an int8 model


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


# ------------------------------------------------------------------ runtime.precision: auto

def test_build_times_int8_and_fp32_on_this_cpu(yunet_build):
    """The build records both medians, the faster one and this CPU (not which one wins)."""
    _, rep = yunet_build
    sp = rep["speed"]
    assert sp["fp32_ms"] > 0 and sp["int8_ms"] > 0 and sp["cpu"] == precision.cpu_id()
    assert sp["choice"] == ("int8" if sp["int8_ms"] < sp["fp32_ms"] else "fp32")
    assert sp["shapes"] == rep["calibration"]["shapes"] and sp["rounds"] >= 5
    assert precision.speed_choice(rep)[0] == sp["choice"]


def test_build_times_an_installed_file_once(yunet_build, tmp_path):
    """An int8 file built without a timing (or on another CPU) is timed, not rebuilt."""
    root, rep = yunet_build
    folder = tmp_path / "yunet" / rep["key"]
    shutil.copytree(root / "yunet" / rep["key"], folder)
    old = json.loads((folder / "report.json").read_text())
    old["speed"] = dict(old["speed"], cpu="another cpu", fp32_ms=-1)
    (folder / "report.json").write_text(json.dumps(old))
    logs = []
    again = quantize.build("yunet", out_root=tmp_path, log=logs.append)
    assert any("already built" in m for m in logs) and not any("calibrating" in m for m in logs)
    assert again["speed"]["cpu"] == precision.cpu_id() and again["speed"]["fp32_ms"] > 0
    assert json.loads((folder / "report.json").read_text())["speed"] == again["speed"]
    assert assets.sha256_file(folder / "model.onnx") == rep["int8"]["sha256"]


@pytest.fixture
def int8_cache(yunet_build, models, tmp_path, monkeypatch):
    """A cache holding the int8 YuNet as built; returns (int8 path, its report path)."""
    root, rep = yunet_build
    (tmp_path / "blobs").symlink_to(assets.cache_dir() / "blobs")
    monkeypatch.setenv("ANONCAM_CACHE", str(tmp_path))
    sha = assets.load_manifest("models")["yunet"].sha256
    shutil.copytree(root / "yunet" / rep["key"], precision.int8_dir("yunet", sha))
    return precision.int8_path("yunet", sha), precision.report_path("yunet", sha)


def _record(report, **speed):
    rep = json.loads(report.read_text())
    rep["speed"] = dict(rep["speed"], **speed) if speed else None
    report.write_text(json.dumps(rep))


@pytest.mark.parametrize("choice", ["int8", "fp32"])
def test_auto_runs_the_recorded_choice(int8_cache, choice):
    path, report = int8_cache
    _record(report, choice=choice, cpu=precision.cpu_id())
    want = path if choice == "int8" else assets.model_path("yunet")
    assert precision.model_file("yunet", "auto") == want
    det = Pipeline.from_config(make_config(runtime={"threads": 1})).detector  # auto is the default
    assert precision.identity(det.backend.session).get("anoncam.precision", "fp32") == choice
    assert precision.model_file("yunet", "int8") == path  # int8 asked: int8 whatever was measured


@pytest.mark.parametrize("speed", [{}, {"cpu": "another cpu", "choice": "int8"}])
def test_auto_without_timing_here_runs_fp32_and_warns(int8_cache, caplog, speed):
    _, report = int8_cache
    _record(report, **speed)
    with caplog.at_level(logging.WARNING, logger="anoncam.precision"):
        assert precision.model_file("yunet", "auto") == assets.model_path("yunet")
    assert "RUNNING FP32" in caplog.text and "anoncam models quantize yunet" in caplog.text
    assert ("another CPU" if speed else "no int8/fp32 timing") in caplog.text


@pytest.mark.parametrize("choice", ["int8", "fp32"])
def test_auto_checks_the_int8_file_whatever_the_choice(int8_cache, choice):
    path, report = int8_cache
    _record(report, choice=choice, cpu=precision.cpu_id())
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(assets.AssetError) as e:
        precision.model_file("yunet", "auto")
    assert str(path) in str(e.value) and json.loads(report.read_text())["int8"]["sha256"] in str(e.value)


def test_cli_models_quantize_builds_and_times(cli_build, media, tmp_path):
    """`anoncam models quantize yunet` runs the quantize tool into the cache; `anoncam anonymize` then
    logs what auto chose."""
    cache, env, p = cli_build
    rep = json.loads(next((cache / "int8" / "yunet").glob("*/report.json")).read_text())
    assert rep["installed"] and rep["speed"]["choice"] in ("int8", "fp32")
    assert f"runtime.precision auto runs {rep['speed']['choice']}" in p.stderr
    out = tmp_path / "astro.png"
    p = subprocess.run([*ANONCAM, "anonymize", str(media["astronaut"]), "-o", str(out), "-q"], env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and out.exists(), p.stderr
    assert f"yunet: {rep['speed']['choice']} model" in p.stderr and "runtime.precision: auto" in p.stderr


# ------------------------------------------------------------------ imports: quantize -> anoncam only

FIRMWARE = REPO / "firmware" / "anoncam"


def _modules() -> dict[str, tuple]:
    out = {}
    for f in FIRMWARE.rglob("*.py"):
        parts = list(f.relative_to(FIRMWARE.parent).with_suffix("").parts)
        pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if pkg else parts)] = (f, pkg)
    return out


def _imports(name: str, f, pkg: bool, mods, top_only: bool) -> set[str]:
    """Modules imported by a file (absolute names); top_only: only what runs at import time (not
    inside functions). Imports of anoncam modules resolve to the module itself when it is one."""
    base = name.split(".") if pkg else name.split(".")[:-1]
    found = set()

    def walk(nodes):
        for n in nodes:
            if top_only and isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(n, ast.Import):
                found.update(a.name for a in n.names)
            elif isinstance(n, ast.ImportFrom):
                mod = ".".join(base[:len(base) - n.level + 1] + ([n.module] if n.module else [])) if n.level \
                    else n.module
                found.update(f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in n.names)
            elif isinstance(n, ast.Call) and getattr(n.func, "attr", getattr(n.func, "id", "")) in (
                    "import_module", "__import__") and n.args and isinstance(n.args[0], ast.Constant):
                found.add(str(n.args[0].value))
            walk(ast.iter_child_nodes(n))
    walk(ast.parse(f.read_text()).body)
    return found


def test_firmware_never_imports_quantize():
    mods = _modules()
    bad = {m: sorted(i for i in _imports(m, f, pkg, mods, top_only=False) if i.split(".")[0] == "quantize")
           for m, (f, pkg) in mods.items()}
    assert {m: v for m, v in bad.items() if v} == {}
    # and at run time: start-up of the default pipeline loads no module of the build tool
    code = ("import sys; from anoncam.cli import parser; from anoncam.pipeline import Pipeline; "
            "from anoncam.config import Config; import anoncam.runner, anoncam.bench, anoncam.eval; "
            "Pipeline.from_config(Config()); print(sorted(m for m in sys.modules if m.split('.')[0] == 'quantize'))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stderr[-2000:]


def test_no_import_cycles_in_the_firmware():
    """No cycle among anoncam modules through imports that run at import time."""
    mods = _modules()
    graph = {}
    for m, (f, pkg) in mods.items():
        deps = {i for i in _imports(m, f, pkg, mods, top_only=True) if i in mods}
        # importing a.b.c runs a/__init__ and a/b/__init__ first (not the importer's own ancestors)
        deps |= {".".join(d.split(".")[:k]) for d in deps for k in range(1, d.count(".") + 1)} - {
            ".".join(m.split(".")[:k]) for k in range(1, m.count(".") + 2)}
        graph[m] = deps - {m}
    cycles, state = [], {}

    def visit(m, path):
        state[m] = "open"
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                cycles.append(path[path.index(d):] + [d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = "done"
    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []
