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
        scale, zero = self.inp["quantization"]
        if self.inp["dtype"] != np.float32 and scale:
            x = np.clip(np.round(x / scale + zero), np.iinfo(self.inp["dtype"]).min,
                        np.iinfo(self.inp["dtype"]).max).astype(self.inp["dtype"])
        self.interp.set_tensor(self.inp["index"], x.astype(self.inp["dtype"], copy=False))
        self.interp.invoke()
        outs = []
        for d in self.outs:
            y = self.interp.get_tensor(d["index"])
            s, z = d["quantization"]
            if d["dtype"] != np.float32 and s:
                y = (y.astype(np.float32) - z) * s
            outs.append(y)
        return outs
