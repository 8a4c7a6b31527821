"""LiteRT backend: ai_edge_litert (maintained), else tflite_runtime (<= 2.14); Edge TPU delegate."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def _interpreter_api():
    try:
        from ai_edge_litert.interpreter import Interpreter, load_delegate
        return Interpreter, load_delegate
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter, load_delegate
        return Interpreter, load_delegate
    except ImportError:
        raise RuntimeError("no TFLite runtime: install ai-edge-litert (or tflite-runtime on Python <= 3.11)")


EDGETPU_LIB = "libedgetpu.so.1"


def to_input(x: np.ndarray, detail: dict) -> np.ndarray:
    """A float array as the tensor `detail` takes it: quantized (clipped to its dtype) if it is integer."""
    dtype = detail["dtype"]
    scale, zero = detail["quantization"]
    if dtype != np.float32 and scale:
        info = np.iinfo(dtype)
        x = np.clip(np.round(x / scale + zero), info.min, info.max)
    return x.astype(dtype, copy=False)


def from_output(y: np.ndarray, detail: dict) -> np.ndarray:
    """An output tensor as float32 (dequantized if it is integer)."""
    scale, zero = detail["quantization"]
    if y.dtype != np.float32 and scale:
        return (y.astype(np.float32) - zero) * scale
    return y


class LiteRTBackend:
    name = "litert"

    def __init__(self, model: Path | bytes, threads: int = 2, delegate: str = "none"):
        Interpreter, load_delegate = _interpreter_api()
        kwargs = {"num_threads": threads}
        if isinstance(model, bytes):
            kwargs["model_content"] = model
        else:
            kwargs["model_path"] = str(model)
        self.delegate = "none"
        if delegate == "edgetpu":
            try:
                kwargs["experimental_delegates"] = [load_delegate(EDGETPU_LIB)]
                self.delegate = "edgetpu"
            except (OSError, ValueError) as e:
                log.warning("Edge TPU delegate %s could not be loaded (%s); running on the CPU", EDGETPU_LIB, e)
        self.interp = Interpreter(**kwargs)
        self.interp.allocate_tensors()
        self.inp = self.interp.get_input_details()[0]
        self.outs = self.interp.get_output_details()
        self.input_shape = tuple(int(d) for d in self.inp["shape"])

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        self.interp.set_tensor(self.inp["index"], to_input(x, self.inp))
        self.interp.invoke()
        return [from_output(self.interp.get_tensor(d["index"]), d) for d in self.outs]
