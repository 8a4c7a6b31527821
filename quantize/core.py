"""fp32 ONNX -> static int8 QDQ ONNX (per-channel), drift report, gate, install into the cache."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter
import onnxruntime as ort
from anoncam import assets, precision
from anoncam.backends.dequant import dequantize_blocks
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from . import drift, speed

MODELS = ("yunet", "sface", "generator")
DEFAULT_GATES = {
    "yunet": {"recall_drop_points": 1.0},     # photos and clips: int8 recall >= fp32 recall - 1 point
    "generator": {"psnr_db": 30.0},           # int8 vs fp32 output, mean over the evaluation faces
    "sface": {"cosine_mean": 0.97},           # int8 vs fp32 embeddings, mean
}


class QuantizeError(RuntimeError):
    pass


@dataclass
class Source:
    """An fp32 model ready to quantize: its bytes (after any graph edit) and the original's sha256."""
    name: str
    path: Path                      # the file as shipped or fetched
    sha256: str                     # of that file: the cache key
    model: onnx.ModelProto          # what gets quantized (dynamic dims, dequantized weights, ...)
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------ fp32 sources

def generator_path(explicit: Path | None = None) -> Path | None:
    """The generator's fp32 ONNX: an explicit path (e.g. a fresh train.py export), else the manifest
    entry `generator` (verified); None if there is neither."""
    if explicit is not None:
        return Path(explicit)
    return assets.model_path("generator") if "generator" in assets.load_manifest("models") else None


def source(name: str, generator: Path | None = None) -> Source:
    if name == "yunet":
        from anoncam.detect.yunet import dynamic_yunet
        path = assets.model_path("yunet")
        m = onnx.load_from_string(dynamic_yunet(path))
        return Source(name, path, assets.sha256_file(path), m,
                      ["input made dynamic (H, W) as detect/yunet.py dynamic_yunet does"])
    if name == "sface":
        path = assets.model_path("sface")
        m = onnx.load(str(path))
        n = dequantize_blocks(m)
        onnx.checker.check_model(m)
        return Source(name, path, assets.sha256_file(path), m,
                      [f"fp32 is not shipped: {n} block-quantized weights (DequantizeLinear block_size) "
                       f"dequantized offline into a plain fp32 graph, then quantized static int8 QDQ"])
    if name == "generator":
        path = generator_path(generator)
        if path is None or not path.is_file():
            raise QuantizeError("generator: no fp32 ONNX (no `generator` entry in models/manifest.yaml); "
                            "pass --generator PATH")
        return Source(name, path, assets.sha256_file(path), onnx.load(str(path)))
    raise QuantizeError(f"unknown model {name!r}; known: {', '.join(MODELS)}")


# ------------------------------------------------------------------------------------ quantization

class _Reader(CalibrationDataReader):
    def __init__(self, input_name: str, batches: list[np.ndarray]):
        self.items = iter([{input_name: b} for b in batches])

    def get_next(self):
        return next(self.items, None)


def quantize_model(src: Source, calib: list[np.ndarray], work: Path) -> onnx.ModelProto:
    """Static int8 QDQ, per-channel weights, MinMax calibration over `calib` (deterministic); with
    `float_image_convs`, the convs reading the image directly stay fp32 (`image_convs`)."""
    s = precision.settings_for(src.name)
    fp32 = work / "fp32.onnx"
    pre = work / "pre.onnx"
    out = work / "int8.onnx"
    m = src.model
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:  # per-channel Q/DQ (the `axis` attribute) needs opset 13
        m = onnx.version_converter.convert_version(m, 13)
    onnx.save(m, str(fp32))
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    input_name = src.model.graph.input[0].name
    exclude = image_convs(onnx.load(str(pre))) if s.get("float_image_convs") else []
    quantize_static(str(pre), str(out), _Reader(input_name, calib), nodes_to_exclude=exclude,
                    quant_format=QuantFormat.QDQ if s["format"] == "QDQ" else QuantFormat.QOperator,
                    per_channel=s["per_channel"], reduce_range=s["reduce_range"],
                    activation_type=getattr(QuantType, s["activation_type"]),
                    weight_type=getattr(QuantType, s["weight_type"]),
                    calibrate_method=getattr(CalibrationMethod, s["calibrate_method"]))
    return onnx.load(str(out))


def image_convs(m: onnx.ModelProto) -> list[str]:
    """Names of the Conv nodes that read a graph input with 3 channels (the image) directly."""
    inputs = {i.name for i in m.graph.input}
    weights = {i.name: i for i in m.graph.initializer}
    return [n.name for n in m.graph.node if n.op_type == "Conv" and n.input[0] in inputs
            and n.input[1] in weights and len(weights[n.input[1]].dims) == 4
            and weights[n.input[1]].dims[1] == 3]


def session(model: onnx.ModelProto | Path | bytes, threads: int = 1) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else (
        model if isinstance(model, bytes) else str(model))
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def op_counts(m: onnx.ModelProto) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in m.graph.node:
        out[n.op_type] = out.get(n.op_type, 0) + 1
    return dict(sorted(out.items()))


def float_ops(m: onnx.ModelProto) -> list[str]:
    """Compute ops left in float: not fed by a DequantizeLinear on any input (so onnxruntime runs them
    in fp32), excluding the Q/DQ nodes themselves and shape plumbing."""
    producer = {o: n for n in m.graph.node for o in n.output}
    plumbing = {"QuantizeLinear", "DequantizeLinear", "Shape", "Gather", "Unsqueeze", "Concat", "Constant",
                "Reshape", "Transpose", "Flatten", "Squeeze", "Slice", "Cast"}
    left = set()
    for n in m.graph.node:
        if n.op_type in plumbing:
            continue
        fed = any(i in producer and producer[i].op_type == "DequantizeLinear" for i in n.input)
        if not fed:
            left.add(n.op_type)
    return sorted(left)


# ------------------------------------------------------------------------------------ build

def build(name: str, gates: dict | None = None, out_root: Path | None = None, force: bool = False,
          generator: Path | None = None, log: Callable[[str], None] = print) -> dict:
    """Quantize model `name`, write its drift report, install the int8 file if every gate passes.

    out_root: the cache folder to write into (default: the anoncam cache's int8/<name>/<key>/).
    Returns the report (also written as report.json next to where model.onnx goes)."""
    t0 = time.perf_counter()
    src = source(name, generator)
    key = f"{src.sha256[:16]}-{precision.settings_digest(name)[:12]}"
    folder = (out_root / name / key) if out_root else precision.int8_dir(name, src.sha256)
    target, report_file = folder / "model.onnx", folder / "report.json"
    if target.is_file() and report_file.is_file() and not force and gates is None:
        rep = json.loads(report_file.read_text())
        if assets.sha256_file(target) == precision.recorded_sha256(rep):
            log(f"{name}: int8 already built and installed: {target}")
            if precision.speed_choice(rep)[0] is None:  # no timing on this CPU yet
                rep["speed"] = speed.measure(src.model, target, rep["calibration"]["shapes"])
                _write_json(report_file, rep)
                log(f"{name}: timed on this CPU: {_speed_line(rep['speed'])}")
            return rep
        log(f"{name}: {target} does not match the sha256 recorded in {report_file}; building it again")
    g = dict(DEFAULT_GATES.get(name, {}))
    g.update(gates or {})
    log(f"{name}: calibrating on registry media ({src.path.name}, sha256 {src.sha256[:16]}...)")
    ev = drift.EVALUATORS[name]()
    calib = ev.calibration(src)
    log(f"{name}: {len(calib)} calibration inputs; quantizing (static QDQ, per-channel)")
    with tempfile.TemporaryDirectory(prefix=f"anoncam-q-{name}-") as tmp:
        q = quantize_model(src, calib, Path(tmp))
    meta = {"anoncam.precision": "int8", "anoncam.model": name, "anoncam.fp32_sha256": src.sha256,
            "anoncam.key": key, "anoncam.settings": json.dumps(precision.settings_for(name), sort_keys=True)}
    onnx.helper.set_model_props(q, meta)
    data = q.SerializeToString()
    log(f"{name}: drift report (fp32 vs int8 on held-out inputs)")
    metrics = ev.compare(src.model, q)
    checks = drift.check(name, metrics, g)
    passed = all(c["pass"] for c in checks)
    shapes = sorted({"x".join(map(str, c.shape)) for c in calib})
    sp = speed.measure(src.model, data, shapes) if passed else None
    rep = {
        "model": name, "fp32": {"path": str(src.path), "sha256": src.sha256, "bytes": src.path.stat().st_size},
        "int8": {"path": str(target), "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                 "ops": op_counts(q), "float_ops": float_ops(q)},
        "key": key, "settings": precision.settings_for(name), "notes": src.notes,
        "calibration": {"inputs": len(calib), "shapes": shapes, "from": ev.calibration_from},
        "evaluation": ev.evaluation_from, "metrics": metrics, "gates": checks, "installed": passed, "speed": sp,
        "machine": {"cpu": platform.processor() or platform.machine(), "onnxruntime": ort.__version__,
                    "onnx": onnx.__version__}, "seconds": round(time.perf_counter() - t0, 1),
    }
    folder.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)  # an earlier file of the same key is withdrawn first
    _write_json(report_file, rep)  # before the file: the runtime checks it against the sha256 in here
    if passed:
        part = target.with_name(f"model.onnx.{os.getpid()}.part")  # two test workers may build at once
        part.write_bytes(data)
        os.replace(part, target)
    (folder / "report.md").write_text(drift.markdown(rep))
    verdict = "installed" if passed else "NOT installed (failed gate: " + ", ".join(
        c["gate"] for c in checks if not c["pass"]) + ")"
    log(f"{name}: {verdict}: {target if passed else report_file} ({rep['seconds']} s)")
    if sp:
        log(f"{name}: timed on this CPU: {_speed_line(sp)}")
    return rep


def _speed_line(sp: dict) -> str:
    return f"int8 {sp['int8_ms']} ms, fp32 {sp['fp32_ms']} ms: runtime.precision auto runs {sp['choice']}"


def _write_json(path: Path, data: dict) -> None:
    part = path.with_name(f"{path.name}.{os.getpid()}.part")
    part.write_text(json.dumps(data, indent=2))
    os.replace(part, path)
