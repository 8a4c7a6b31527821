"""Inference backends: one small interface, chosen by model file type.

  .onnx   -> onnxruntime (threads, execution providers: CPU, CUDA, TensorRT)
  .tflite -> LiteRT (ai_edge_litert, else tflite_runtime), optional Edge TPU delegate
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class Backend(Protocol):
    name: str
    input_shape: tuple  # shape of the first input; dynamic dims are None

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run on one input tensor; return the outputs in model order."""


def open_model(path: Path | bytes, kind: str, threads: int = 2, providers: list[str] | None = None,
               delegate: str = "none") -> Backend:
    if kind == "onnx":
        from .onnx import OnnxBackend
        return OnnxBackend(path, threads=threads, providers=providers)
    if kind == "tflite":
        from .litert import LiteRTBackend
        return LiteRTBackend(path, threads=threads, delegate=delegate)
    raise ValueError(f"unknown model kind {kind!r}")
