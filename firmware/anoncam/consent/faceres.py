"""HSE-FaceRes, the consent check of video tracks: the 1024-d pooled features of human's face
description model (an age/gender MobileNet; @vladmandic/human 3.3.6 on npm, TFJS graph weights,
MIT package), run by onnxruntime on SFace's 112x112 aligned crop resized to 128x128, RGB 0-255,
L2-normalized. About a fifth of SFace's cost (bench/consent_bench.py); SFace still decides stills and
enrollment duplicates (gallery.py keeps both embeddings per face).

The TFJS graph (faceres.json + faceres.bin, both sha256-checked by the manifest) is turned into an
ONNX graph in memory at start-up: (fused) Conv2D and DepthwiseConv2dNative (+ BiasAdd, + Relu),
elementwise ops, a global Mean; the NHWC input is transposed once; ReLU6 (Relu, Min, Max) becomes one
Clip, which onnxruntime fuses into the convolution (a check 27 % cheaper, the same embedding). Any
other op is an error."""
from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .. import assets

OUTPUT = "global_pooling/Mean"
SIZE = 128
DIM = 1024

ELEMENTWISE = {"Relu": "Relu", "Abs": "Abs", "Sub": "Sub", "Mul": "Mul", "Add": "Add", "Minimum": "Min", "Maximum": "Max"}


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
        q = spec.get("quantization", {}).get("dtype")
        if q not in (None, "float16"):
            raise ValueError(f"{spec['name']}: {q} weights are not read")
        dtype = np.float16 if q else dtype
        n = int(np.prod(spec["shape"]))
        w[spec["name"]] = np.frombuffer(buf, dtype, n, off).reshape(spec["shape"]).astype(np.float32 if q else dtype)
        off += np.dtype(dtype).itemsize * n
    if off != len(buf):
        raise ValueError(f"{weights}: {len(buf) - off} bytes left after the manifest's tensors")
    return m["modelTopology"]["node"], w


def build_onnx(nodes: list[dict], w: dict[str, np.ndarray], output: str, size: int,
               clip: bool = True) -> onnx.ModelProto:
    """x [N,size,size,3] RGB -> y [N,D] (the node `output`, not normalized); `clip`: ReLU6 as one Clip."""
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

    names = {n["name"]: "x_nchw" for n in nodes if n["op"] == "Placeholder"}
    out.append(helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]))
    for n in nodes:
        op, name, attr = n["op"], n["name"], n.get("attr", {})
        if op in ("Const", "Placeholder"):
            continue
        ins = n["input"]
        if op in ("_FusedConv2D", "FusedDepthwiseConv2dNative", "Conv2D", "DepthwiseConv2dNative"):
            k = w[ins[1]]
            b = w[ins[2]] if len(ins) > 2 else np.zeros(0, np.float32)
            if "Depthwise" not in op:
                wt, group = k.transpose(3, 2, 0, 1), 1
            else:  # [H,W,C,mult] -> [C*mult,1,H,W]
                h, ww, c, mult = k.shape
                wt, group = k.reshape(h, ww, c * mult).transpose(2, 0, 1)[:, None], c
            stride = [int(s) for s in attr["strides"]["list"]["i"][1:3]]
            pad = {"SAME": "SAME_UPPER", "VALID": "VALID"}[_s(attr, "padding")]
            fused = _fused(attr) or ["BiasAdd"]
            if fused[0] != "BiasAdd" or not set(fused[1:]) <= {"Relu"}:
                raise ValueError(f"{name}: fused ops {fused} not handled")
            y = name + ("/conv" if "Relu" in fused else "")
            args = [names[ins[0]], const(wt, ins[1] + "_w")] + ([const(b, ins[2] + "_b")] if b.size else [])
            out.append(helper.make_node("Conv", args, [y],
                                        kernel_shape=list(wt.shape[2:]), strides=stride, auto_pad=pad, group=group))
            if "Relu" in fused:
                out.append(helper.make_node("Relu", [y], [name]))
        elif op in ELEMENTWISE:
            args = [names.get(i) or nchw(i) for i in ins]
            out.append(helper.make_node(ELEMENTWISE[op], args, [name]))
        elif op == "Mean":  # the global pooling over H, W
            out.append(helper.make_node("ReduceMean", [names[ins[0]]], [name], axes=[2, 3], keepdims=0))
        elif op == "Squeeze":
            out.append(helper.make_node("Flatten", [names[ins[0]]], [name]))
        else:
            raise ValueError(f"{name}: op {op} not handled")
        names[name] = name
        if name == output:
            break
    out.append(helper.make_node("Identity", [output], ["y"]))
    if clip:
        out = relu6_as_clip(out, inits)
    graph = helper.make_graph(out, "mobilefacenet", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", size, size, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", None])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model


def relu6_as_clip(nodes: list, inits: list) -> list:
    """Relu -> Min(6) -> Max(0) (Keras' ReLU6, each output used once) becomes Clip(0, 6): the same
    values, and onnxruntime fuses a Clip into the Conv before it and keeps every convolution in its
    blocked layout (the Min/Max pair made it reorder each layer's output and back: about a third of
    the network's time)."""
    scalars = {t.name: numpy_helper.to_array(t).item() for t in inits if int(np.prod(t.dims)) == 1}
    uses = Counter(i for n in nodes for i in n.input)
    after = {n.input[0]: n for n in nodes if n.input}
    drop, out, new_consts = set(), [], {}
    for n in nodes:
        if n.output[0] in drop:
            continue
        lo = after.get(n.output[0]) if n.op_type == "Relu" and uses[n.output[0]] == 1 else None
        hi = after.get(lo.output[0]) if lo is not None and lo.op_type == "Min" and uses[lo.output[0]] == 1 else None
        if (hi is not None and hi.op_type == "Max" and scalars.get(hi.input[1]) == 0
                and scalars.get(lo.input[1], -1) > 0):
            bounds = {f"clip_{v:g}": v for v in (0.0, scalars[lo.input[1]])}
            new_consts.update(bounds)
            out.append(helper.make_node("Clip", [n.input[0], *bounds], [hi.output[0]]))
            drop.update((lo.output[0], hi.output[0]))
        else:
            out.append(n)
    used = {i for n in out for i in n.input}  # the Min/Max bounds are gone
    inits[:] = [t for t in inits if t.name in used] + [
        numpy_helper.from_array(np.array(v, np.float32), name) for name, v in new_consts.items()]
    return out


class FaceRes:
    """FaceRes embeddings of aligned 112x112 crops (resized to `size`)."""

    def __init__(self, threads: int = 1, size: int = SIZE):
        from ..backends import open_model
        model = build_onnx(*read_graph_model(assets.model_path("faceres_graph"), assets.model_path("faceres")),
                           OUTPUT, size)
        self.size, self.net = size, open_model(model.SerializeToString(), "onnx", threads=threads)

    def embed_crop(self, crop: np.ndarray) -> np.ndarray:
        x = cv2.cvtColor(cv2.resize(crop, (self.size, self.size)), cv2.COLOR_BGR2RGB).astype(np.float32)
        f = self.net.run(np.ascontiguousarray(x[None]))[0].reshape(-1)
        return f / (np.linalg.norm(f) + 1e-12)
