"""Full-integer int8 TFLite through onnx2tf, in a separate tools venv (never the device runtime).

`make tflite` / `python -m quantize tflite [yunet]`:
  1. a venv at <cache>/venvs/onnx2tf-<version> with onnx2tf (it pins tensorflow 2.19, ~2.6 GB);
  2. the fp32 ONNX with its input fixed (onnx2tf needs static shapes; YuNet: 1x3x320x320, so
     every 320 px blob fits, padded) and an NHWC calibration set from the same registry media as the
     ONNX int8 build (`-cind`), plus the sample file onnx2tf would otherwise download, so it runs offline;
  3. onnx2tf -oiqt -qt per-channel: *_full_integer_quant.tflite (int8 in and out, the form the Edge
     TPU compiler needs) and *_integer_quant.tflite (float in and out);
  4. a report: ops of the full-integer file whose tensors are not int8 (they fall off the integer path;
     on an Edge TPU the compiler leaves them, and everything after them, on the CPU), and the drift of
     the int8 TFLite outputs against the fp32 ONNX on held-out inputs.

Output: <cache>/tflite/<name>/<fp32 sha256[:16]>-<onnx2tf version>/{*.tflite, report.json}.
Edge TPU: `edgetpu_compiler` is not reachable from here; see quantize/README.md.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from anoncam import assets

ONNX2TF = "1.29.24"
SHAPES = {"yunet": (1, 3, 320, 320)}  # any 320 px long-side blob fits (landscape, portrait, square)
SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"


def venv_dir() -> Path:
    return assets.cache_dir() / "venvs" / f"onnx2tf-{ONNX2TF}"


def ensure_venv(log=print) -> Path:
    bin_dir = venv_dir() / "bin"
    if (bin_dir / "onnx2tf").is_file():
        return bin_dir
    log(f"creating the onnx2tf tools venv at {venv_dir()} (tensorflow, ~2.6 GB; once)")
    subprocess.run([sys.executable, "-m", "venv", str(venv_dir())], check=True)
    proc = subprocess.run([str(bin_dir / "pip"), "install", "-q", "--disable-pip-version-check",
                           "--only-binary=:all:", f"onnx2tf=={ONNX2TF}"], capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(venv_dir(), ignore_errors=True)
        raise RuntimeError(f"installing onnx2tf=={ONNX2TF} failed:\n{proc.stderr[-2000:]}")
    return bin_dir


def fixed_input(m: onnx.ModelProto, shape: tuple[int, ...]) -> onnx.ModelProto:
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims, shape):
        d.ClearField("dim_param")
        d.dim_value = v
    for out in m.graph.output:
        for d in out.type.tensor_type.shape.dim:
            d.ClearField("dim_value")
            d.ClearField("dim_param")
    del m.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(m)


def _nhwc_batch(xs: list[np.ndarray], shape) -> np.ndarray:
    _, c, h, w = shape
    out = []
    for x in xs:
        y = np.zeros((h, w, c), np.float32)
        hh, ww = min(h, x.shape[2]), min(w, x.shape[3])
        y[:hh, :ww] = x[0, :, :hh, :ww].transpose(1, 2, 0)
        out.append(y)
    return np.stack(out)


def integer_path_report(tfl: Path) -> dict:
    """Ops of a TFLite file and which of them have a non-int8 (float) input or output tensor."""
    from anoncam.backends.litert import _interpreter_api
    Interpreter, _ = _interpreter_api()
    try:  # the ops as written, not as the default XNNPACK delegate swallows them
        from ai_edge_litert.interpreter import OpResolverType
        it = Interpreter(model_path=str(tfl),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    except ImportError:
        it = Interpreter(model_path=str(tfl))
    it.allocate_tensors()
    types = {t["index"]: np.dtype(t["dtype"]).name for t in it.get_tensor_details()}
    ops, off = {}, {}
    for op in it._get_ops_details():
        name = op["op_name"]
        ops[name] = ops.get(name, 0) + 1
        ts = [types.get(i) for i in list(op["inputs"]) + list(op["outputs"]) if i >= 0]
        if any(t and t.startswith("float") for t in ts):
            off[name] = off.get(name, 0) + 1
    io = {"inputs": [np.dtype(d["dtype"]).name for d in it.get_input_details()],
          "outputs": [np.dtype(d["dtype"]).name for d in it.get_output_details()]}
    return {"file": str(tfl), "bytes": tfl.stat().st_size, "ops": ops, "float_ops": off, "io": io}


def tflite_drift(tfl: Path, fp32: onnx.ModelProto) -> dict:
    """Detection drift of the TFLite detector against the fp32 ONNX, as for the ONNX int8 build."""
    from anoncam.detect.yunet_tflite import YuNetTFLite

    from . import drift
    return drift.detector_drift(drift._Session(fp32), YuNetTFLite(tfl, threads=1), latency=False)


def build(name: str = "yunet", log=print) -> dict:
    from . import core, drift
    if name not in SHAPES:
        raise core.QuantizeError(f"tflite: only {', '.join(SHAPES)} is set up (fixed input shape needed)")
    bin_dir = ensure_venv(log)
    src = core.source(name)
    shape = SHAPES[name]
    out = assets.cache_dir() / "tflite" / name / f"{src.sha256[:16]}-onnx2tf{ONNX2TF}"
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)
    m = fixed_input(onnx.ModelProto.FromString(src.model.SerializeToString()), shape)
    onnx.save(m, str(work / f"{name}.onnx"))
    xs = drift.EVALUATORS[name]().calibration(src)
    np.save(work / "calib.npy", _nhwc_batch(xs, shape))
    # onnx2tf downloads this sample unless it is in the working directory; ours is the real set
    np.save(work / SAMPLE, _nhwc_batch(xs[:20], (1, 3, 128, 128)))
    in_name = m.graph.input[0].name
    cmd = [str(bin_dir / "onnx2tf"), "-i", f"{name}.onnx", "-o", "tf", "-oiqt", "-qt", "per-channel",
           "-cind", in_name, "calib.npy", "[[[[0.0,0.0,0.0]]]]", "[[[[1.0,1.0,1.0]]]]", "-n"]
    log(f"tflite {name}: {' '.join(cmd)} (in {work})")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env)
    (out / "onnx2tf.log").write_text(proc.stdout + proc.stderr)
    files = sorted((work / "tf").glob("*.tflite"))
    rep = {"model": name, "fp32_sha256": src.sha256, "onnx2tf": ONNX2TF, "input_shape_nchw": shape,
           "command": cmd, "exit": proc.returncode, "log": str(out / "onnx2tf.log"),
           "files": [str(f) for f in files]}
    if proc.returncode != 0 or not files:
        rep["error"] = (proc.stdout + proc.stderr)[-3000:]
    else:
        for kind in ("full_integer_quant", "integer_quant"):
            f = next((f for f in files if f.stem == f"{name}_{kind}"), None)
            if f is None:
                continue
            dst = out / f"{name}_{kind}.tflite"
            shutil.copyfile(f, dst)
            rep[kind] = integer_path_report(dst)
            rep[kind]["drift_vs_fp32"] = tflite_drift(dst, src.model)
    (out / "report.json").write_text(json.dumps(rep, indent=2))
    log(f"tflite {name}: report {out / 'report.json'}")
    return rep
