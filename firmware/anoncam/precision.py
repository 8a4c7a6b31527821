"""Model precision at run time: int8 (static QDQ, built by the `quantize` tool) or the fp32 file.

An int8 model lives in the cache, keyed by the fp32 file's sha256 and the quantizer settings, so any
machine rebuilds the same file (`anoncam models quantize`, `anoncam-quantize`, `python -m quantize`):

  <cache>/int8/<name>/<fp32 sha256[:16]>-<settings digest[:12]>/
      model.onnx     installed only when the conversion passed its drift gate
      report.json    the drift report (written in every case; says "installed": true/false), the int8
                     file's sha256 (`int8.sha256`, checked before every load) and `speed`: int8 and
                     fp32 timed on this CPU when it was built, and the faster one (`choice`)

The int8 file carries its identity in the ONNX metadata (`anoncam.precision`, `anoncam.fp32_sha256`,
`anoncam.key`), readable from a loaded session (`session.get_modelmeta().custom_metadata_map`).

`model_file(name, precision)` is what the runtime calls; it never builds a model. `auto` (default):
the recorded faster one; `int8`: the int8 file; `fp32`: the fp32 file. An int8 file that does not
match its recorded sha256 is an AssetError (exit 3), in auto and int8 alike. A missing or rejected
int8 file, or (auto) no timing recorded on this CPU: the fp32 file and one WARNING saying how to fix it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import platform
from pathlib import Path

import onnxruntime as ort

from . import assets

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "int8", "fp32")
# Bump when the calibration set or the recipe changes: every int8 file is then rebuilt.
RECIPE = "anoncam-int8-v3"
# The quantizer settings (onnxruntime quantize_static), part of the cache key.
SETTINGS = {
    "recipe": RECIPE,
    "format": "QDQ",
    "per_channel": True,
    "activation_type": "QUInt8",
    "weight_type": "QInt8",
    "calibrate_method": "MinMax",
    "reduce_range": False,
    # A conv reading the 3-channel image stays fp32 (its int8 kernel, K = 27, is the slowest layer:
    # YuNet's first conv 381 us int8 vs 123 fp32 on x86; box IoU vs fp32 0.970 -> 0.972).
    "float_image_convs": True,
    # the quantizer's output may change between onnxruntime minor versions
    "onnxruntime": ".".join(ort.__version__.split(".")[:2]),
}


def settings_for(name: str) -> dict:
    """Settings of one model: the common ones plus its calibration input size."""
    s = dict(SETTINGS)
    s["model"] = name
    s["input"] = {"yunet": "320px long side, H and W multiples of 32, dynamic",
                  "sface": "112x112 aligned crops (cv2.FaceRecognizerSF.alignCrop)",
                  "generator": "1x11x128x128 generator_input on FaceMesh crops"}.get(name, "")
    return s


def settings_digest(name: str) -> str:
    return hashlib.sha256(json.dumps(settings_for(name), sort_keys=True).encode()).hexdigest()


def int8_dir(name: str, fp32_sha256: str) -> Path:
    return assets.cache_dir() / "int8" / name / f"{fp32_sha256[:16]}-{settings_digest(name)[:12]}"


def int8_path(name: str, fp32_sha256: str) -> Path:
    return int8_dir(name, fp32_sha256) / "model.onnx"


def report_path(name: str, fp32_sha256: str) -> Path:
    return int8_dir(name, fp32_sha256) / "report.json"


def cpu_id() -> str:
    """This CPU, as recorded with a timing (a cache moved to another CPU is timed again)."""
    keys = ("model name", "cpu model", "hardware", "cpu implementer", "cpu part")
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    vals = sorted({v.strip() for k, _, v in (ln.partition(":") for ln in lines) if k.strip().lower() in keys})
    return " / ".join([platform.machine(), *vals] if vals else [platform.machine(), platform.processor()])


def model_file(name: str, precision: str = "auto") -> Path:
    """The file to load for model `name` at `precision` (see the module docstring)."""
    fp32 = assets.model_path(name)  # verified; raises AssetError (path, sha256) if missing
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; one of {PRECISIONS}")
    if precision == "fp32":
        log.info("%s: fp32 model %s (runtime.precision: fp32)", name, fp32)
        return fp32
    sha = _fp32_sha(name)
    path, report = int8_path(name, sha), report_path(name, sha)
    fix = (f"Build it with `anoncam models quantize {name}` on this device, or set runtime.precision: "
           f"fp32 to silence this.")
    if not path.is_file():
        why = ("it failed its drift gate, see " + str(report)) if _rejected(report) else "it is not built"
        log.warning("%s: no int8 model: %s; RUNNING FP32 (%s). %s", name, why, fp32, fix)
        return fp32
    rep = _report(report)
    assets.check_sha256(path, recorded_sha256(rep), f"{name} int8")  # AssetError if not as built
    if precision == "int8":
        log.info("%s: int8 model %s (runtime.precision: int8)", name, path)
        return path
    choice, why = speed_choice(rep)
    if choice is None:
        log.warning("%s: runtime.precision is auto but %s; RUNNING FP32 (%s). %s", name, why, fp32, fix)
        return fp32
    log.info("%s: %s model %s (runtime.precision: auto; %s)", name, choice, path if choice == "int8" else fp32, why)
    return path if choice == "int8" else fp32


def _fp32_sha(name: str) -> str:
    return assets.load_manifest("models")[name].sha256


def _report(report: Path) -> dict:
    try:
        rep = json.loads(report.read_text())
        return rep if isinstance(rep, dict) else {}
    except (OSError, ValueError):
        return {}


def recorded_sha256(rep: dict) -> str | None:
    """The int8 file's sha256 as its build recorded it in report.json (None: no usable record)."""
    i8 = rep.get("int8") if rep.get("installed") is True else None
    return i8.get("sha256") if isinstance(i8, dict) else None


def speed_choice(rep: dict) -> tuple[str | None, str]:
    """The recorded faster precision of a report and why; None when not timed on this CPU."""
    sp = rep.get("speed")
    if not isinstance(sp, dict) or sp.get("choice") not in ("int8", "fp32"):
        return None, "no int8/fp32 timing is recorded for it"
    if sp.get("cpu") != cpu_id():
        return None, f"its timing was recorded on another CPU ({sp.get('cpu')}, this is {cpu_id()})"
    return sp["choice"], f"int8 {sp.get('int8_ms')} ms vs fp32 {sp.get('fp32_ms')} ms on this CPU"


def _rejected(report: Path) -> bool:
    return _report(report).get("installed") is False


def identity(session) -> dict:
    """The anoncam.* metadata of a loaded onnxruntime session ({} for a file we did not make)."""
    meta = session.get_modelmeta().custom_metadata_map
    return {k: v for k, v in meta.items() if k.startswith("anoncam.")}


def detector(cfg):
    """The pipeline's YuNet for a Config: LiteRT when runtime.detector_tflite is set (Edge TPU with
    litert_delegate: edgetpu, with a warning and the CPU when the delegate is missing), else
    onnxruntime at runtime.precision with runtime.onnx_providers (CUDA/TensorRT when present)."""
    from .detect.yunet import YuNet
    rt, d = cfg.runtime, cfg.detect
    kw = dict(score_threshold=d.score_threshold, nms_threshold=d.nms_threshold, tile=d.tile)
    if rt.detector_tflite is not None:
        be = _tflite_detector(Path(rt.detector_tflite), rt)
        log.info("%s: LiteRT %s (delegate %s)", d.model, rt.detector_tflite, be.delegate)
        return YuNet(be, **kw)
    det = YuNet.from_file(model_file(d.model, rt.precision), threads=rt.threads, providers=rt.onnx_providers, **kw)
    log.info("%s: onnxruntime providers %s", d.model, det.backend.providers)
    return det


def _tflite_detector(path: Path, rt):
    """The user's YuNet TFLite, checked against runtime.detector_tflite_sha256 when set; a file that
    does not load as one is an AssetError with its path and sha256, never a traceback."""
    from .detect.yunet_tflite import YuNetTFLite
    if not path.is_file():
        raise assets.AssetError(f"runtime.detector_tflite: no file at {path}")
    sha = assets.sha256_file(path)
    if rt.detector_tflite_sha256 and sha != rt.detector_tflite_sha256:
        raise assets.AssetError(f"runtime.detector_tflite: file at {path} has sha256 {sha}, expected "
                                f"{rt.detector_tflite_sha256} (runtime.detector_tflite_sha256)")
    if not rt.detector_tflite_sha256:
        log.warning("runtime.detector_tflite %s is not pinned: set runtime.detector_tflite_sha256: %s", path, sha)
    try:
        return YuNetTFLite(path, threads=rt.threads, delegate=rt.litert_delegate)
    except Exception as e:  # noqa: BLE001 -- LiteRT raises ValueError, RuntimeError, KeyError, ...
        raise assets.AssetError(f"runtime.detector_tflite: {path} (sha256 {sha}) does not load as a YuNet "
                                f"TFLite: {type(e).__name__}: {e}") from e
