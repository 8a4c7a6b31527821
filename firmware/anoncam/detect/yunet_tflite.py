"""YuNet on LiteRT: an onnx2tf TFLite of YuNet (`make tflite`: full-integer int8; or the same file
compiled for the Edge TPU, *_edgetpu.tflite), used with `runtime.detector_tflite: PATH`."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..backends.litert import from_output, to_input


class YuNetTFLite:
    """An onnx2tf YuNet TFLite (fixed NHWC input, outputs by signature name output_<ONNX index>) as an
    anoncam Backend taking YuNet's NCHW blobs of any size up to the fixed one: the blob is padded, the
    outputs are cropped back to the blob's grid, so YuNet's decode runs unchanged."""
    name = "litert"

    def __init__(self, path: Path, threads: int = 1, delegate: str = "none"):
        from ..backends.litert import LiteRTBackend
        be = LiteRTBackend(path, threads=threads, delegate=delegate)  # Edge TPU delegate when asked
        self.delegate = be.delegate
        self.runner = be.interp.get_signature_runner()
        self.inp = self.runner.get_input_details()["input"]
        self.outs = self.runner.get_output_details()
        _, self.h, self.w, _ = (int(v) for v in self.inp["shape"])
        self.input_shape = (1, 3, None, None)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        _, _, h, w = x.shape
        if h > self.h or w > self.w:
            raise ValueError(f"blob {h}x{w} larger than the model's fixed {self.h}x{self.w}")
        pad = np.zeros((1, self.h, self.w, 3), np.float32)
        pad[0, :h, :w] = x[0].transpose(1, 2, 0)
        res = self.runner(input=to_input(pad, self.inp))
        outs = []
        for i in range(12):
            k = f"output_{i}"
            y = from_output(res[k], self.outs[k])
            stride = (8, 16, 32)[i % 3]
            gh, gw = self.h // stride, self.w // stride
            y = y.reshape(gh, gw, -1)[: h // stride, : w // stride].reshape(1, -1, y.shape[-1])
            outs.append(y)
        return outs
