"""int8 or fp32: which runs faster on this CPU, for `runtime.precision: auto`.

Timed once when a model is built (and again by `build` when the cache has no timing for this CPU):
both sessions, 1 thread, on one tensor per input shape the calibration recorded (the shapes the
runtime feeds), ROUNDS rounds alternating which precision runs first, the median round. Recorded in
report.json as `speed`; `anoncam.precision.speed_choice` reads it. A tie keeps fp32.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone

import numpy as np
from anoncam import precision

ROUNDS = 21
THREADS = 1


def measure(fp32, int8, shapes: list[str], rounds: int = ROUNDS, threads: int = THREADS) -> dict:
    """Time fp32 and int8 (ONNX models, bytes or paths) on inputs of `shapes` ("1x3x256x320", ...)."""
    from .core import session
    sess = {"fp32": session(fp32, threads), "int8": session(int8, threads)}
    name = sess["fp32"].get_inputs()[0].name
    rng = np.random.default_rng(0)
    xs = [rng.random(tuple(int(v) for v in s.split("x")), np.float32) for s in shapes]
    for s in sess.values():  # warm-up: each shape once
        for x in xs:
            s.run(None, {name: x})
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    for r in range(rounds):
        for k in ("fp32", "int8") if r % 2 == 0 else ("int8", "fp32"):
            t = time.perf_counter()
            for x in xs:
                sess[k].run(None, {name: x})
            times[k].append(time.perf_counter() - t)
    ms = {k: round(1000 * float(np.median(v)), 3) for k, v in times.items()}
    return record(ms["fp32"], ms["int8"], shapes=shapes, rounds=rounds, threads=threads)


def record(fp32_ms: float, int8_ms: float, **how) -> dict:
    """The report's `speed` entry: the two medians, the faster one, this CPU, how it was measured."""
    return {"fp32_ms": fp32_ms, "int8_ms": int8_ms, "choice": "int8" if int8_ms < fp32_ms else "fp32",
            "cpu": precision.cpu_id(), "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **how}
