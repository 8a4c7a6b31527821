"""onnxruntime backend."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)


class OnnxBackend:
    name = "onnxruntime"

    def __init__(self, model: Path | bytes, threads: int = 2, providers: list[str] | None = None):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        available = ort.get_available_providers()
        wanted = providers or ["CPUExecutionProvider"]
        chosen = [p for p in wanted if p in available]
        for p in wanted:
            if p not in available:
                log.warning("onnxruntime provider %s is not available here (have %s); skipped", p, available)
        if "CPUExecutionProvider" not in chosen:
            chosen.append("CPUExecutionProvider")
        src = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(src, so, providers=chosen)
        self.providers = self.session.get_providers()
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inp.shape)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: x})
