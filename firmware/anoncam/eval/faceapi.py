"""A second face recognizer for `anoncam eval`, independent of SFace: face-api.js's FaceRecognitionNet.

@vladmandic/face-api@1.7.15 (npm, MIT) ships it as TFJS weights (model/face_recognition_model.bin and
its weights manifest). It is dlib's face recognition ResNet (29 conv layers, 128-d, 150x150 RGB input)
ported by face-api.js. The forward pass follows src/faceRecognitionNet/ of that package: conv 7x7/2
valid, maxpool 3/2, residual blocks (conv3x3 + bias, per-channel scale + bias, ReLU), down blocks
(conv3x3/2 valid; shortcut avgpool 2/2 zero-padded in channels, the conv branch zero-padded by a
row and column when shorter), global mean, fc 256 -> 128. It is built here as an ONNX graph in
memory (weights dequantized: q * scale + min) and run by onnxruntime; nothing is written to disk.

Input: dlib's face chip (get_face_chip_details(shape5, 150, 0.25), as dlib's own
compute_face_descriptor) cut with FaceMesh's five dlib points; RGB, (x - [122.782, 117.001,
104.298]) / 255 as face-api. Distances: euclidean between raw descriptors (face-api's threshold 0.6).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from .. import assets
from ..attributes import MESH_FOR_DLIB5, dlib_chip

SIZE, PADDING = 150, 0.25
MEAN_RGB = np.array([122.782, 117.001, 104.298], np.float32)
MANIFEST, WEIGHTS = "faceapi_manifest", "faceapi"  # models/manifest.yaml entries
BLOCKS = [("conv32_1", 0), ("conv32_2", 0), ("conv32_3", 0), ("conv64_down", 1), ("conv64_1", 0),
          ("conv64_2", 0), ("conv64_3", 0), ("conv128_down", 1), ("conv128_1", 0), ("conv128_2", 0),
          ("conv256_down", 1), ("conv256_1", 0), ("conv256_2", 0), ("conv256_down_out", 1)]


def read_tfjs(manifest: Path, weights: Path) -> dict[str, np.ndarray]:
    """Tensors of a TFJS weights manifest (one group, one .bin): float32 or uint8 with scale/min."""
    specs = json.loads(Path(manifest).read_text())[0]["weights"]
    buf, off, out = Path(weights).read_bytes(), 0, {}
    for w in specs:
        n = int(np.prod(w["shape"]))
        q = w.get("quantization")
        if q:
            if q["dtype"] != "uint8":
                raise ValueError(f"{w['name']}: unsupported quantization {q['dtype']}")
            a = np.frombuffer(buf, np.uint8, n, off).astype(np.float32) * q["scale"] + q["min"]
            off += n
        else:
            a = np.frombuffer(buf, np.float32, n, off).copy()
            off += 4 * n
        out[w["name"]] = a.reshape(w["shape"])
    if off != len(buf):
        raise ValueError(f"{weights}: {len(buf) - off} bytes left after the manifest's tensors")
    return out


class _Graph:
    def __init__(self, w: dict[str, np.ndarray]):
        self.w, self.nodes, self.inits, self.n = w, [], [], 0

    def name(self, s: str) -> str:
        self.n += 1
        return f"{s}_{self.n}"

    def const(self, a: np.ndarray, s: str) -> str:
        n = self.name(s)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(a), n))
        return n

    def op(self, kind: str, inputs: list[str], **attrs) -> str:
        out = self.name(kind)
        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def conv(self, x: str, p: str, stride: int, relu: bool, valid: bool) -> str:
        """conv + bias, then the scale layer, folded into one Conv (HWIO -> OIHW)."""
        f, b = self.w[f"{p}/conv/filters"], self.w[f"{p}/conv/bias"]
        s, t = self.w[f"{p}/scale/weights"], self.w[f"{p}/scale/biases"]
        k = f.shape[0]
        wt = f.transpose(3, 2, 0, 1) * s[:, None, None, None]
        pad = [0] * 4 if valid else [k // 2] * 4
        y = self.op("Conv", [x, self.const(wt.astype(np.float32), "W"), self.const((b * s + t).astype(np.float32), "B")],
                    kernel_shape=[k, k], strides=[stride, stride], pads=pad)
        return self.op("Relu", [y]) if relu else y


def build_onnx(w: dict[str, np.ndarray]) -> onnx.ModelProto:
    """face-api's FaceRecognitionNet.forwardInput as an ONNX graph: x [N,3,150,150] normalized RGB -> [N,128]."""
    g = _Graph(w)
    x = g.conv("x", "conv32_down", 2, True, valid=True)
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2])
    size, ch = 35, 32
    for p, down in BLOCKS:
        if not down:
            y = g.conv(g.conv(x, f"{p}/conv1", 1, True, False), f"{p}/conv2", 1, False, False)
            x = g.op("Relu", [g.op("Add", [y, x])])
            continue
        out_ch = w[f"{p}/conv2/conv/filters"].shape[3]
        y = g.conv(g.conv(x, f"{p}/conv1", 2, True, True), f"{p}/conv2", 1, False, False)
        conv_size, pool_size = (size - 3) // 2 + 1, size // 2
        if conv_size != pool_size:  # face-api appends a zero row and column to the conv branch
            y = g.op("Pad", [y, g.const(np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64), "pads")])
        s = g.op("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
        if out_ch != ch:  # and zero channels to the shortcut
            s = g.op("Pad", [s, g.const(np.array([0, 0, 0, 0, 0, out_ch - ch, 0, 0], np.int64), "pads")])
        x = g.op("Relu", [g.op("Add", [s, y])])
        size, ch = pool_size, out_ch
    x = g.op("ReduceMean", [x], axes=[2, 3], keepdims=0)
    g.nodes.append(helper.make_node("MatMul", [x, g.const(w["fc"].astype(np.float32), "fc")], ["y"]))
    graph = helper.make_graph(g.nodes, "faceapi_recognition", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 128])], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model


def tfjs_session(manifest: str, weights: str, build, threads: int) -> ort.InferenceSession:
    """An onnxruntime session of the graph `build` makes from the TFJS weights of the manifest
    entries `manifest` (the weights manifest) and `weights` (the .bin), built in memory."""
    man = assets.load_manifest("models")
    w = read_tfjs(assets.fetch(man[manifest]), assets.fetch(man[weights]))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = threads
    return ort.InferenceSession(build(w).SerializeToString(), opts, providers=["CPUExecutionProvider"])


class FaceApiNet:
    """face-api.js's 128-d recognizer; `embed` takes a BGR image and FaceMesh's 468 landmarks."""

    def __init__(self, threads: int = 1):
        self.session = tfjs_session(MANIFEST, WEIGHTS, build_onnx, threads)

    @staticmethod
    def chip(img: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """dlib's 150x150 face chip (padding 0.25), BGR, from FaceMesh landmarks."""
        return dlib_chip(img, landmarks[MESH_FOR_DLIB5].astype(np.float64), SIZE, PADDING)

    def descriptors(self, chips_bgr: list[np.ndarray]) -> np.ndarray:
        """[N,128] raw descriptors of 150x150 BGR chips."""
        x = np.stack([c[..., ::-1].astype(np.float32) for c in chips_bgr])
        x = ((x - MEAN_RGB) / 255.0).transpose(0, 3, 1, 2)
        return self.session.run(None, {"x": np.ascontiguousarray(x)})[0]

    def embed(self, img: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return self.descriptors([self.chip(img, landmarks)])[0]


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """face-api's euclidean distance of two descriptors (same person below ~0.6)."""
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))
