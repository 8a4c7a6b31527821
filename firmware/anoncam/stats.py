"""Counters and per-stage timings (rolling p50/p95) for summary lines, MQTT stats and the bench."""
from __future__ import annotations

import time
from collections import defaultdict, deque

import numpy as np


class Stats:
    def __init__(self, window: int = 300):
        self.started = time.monotonic()
        self.counts: dict[str, int] = defaultdict(int)
        self.stage_ms: dict[str, deque] = defaultdict(lambda: deque(maxlen=window))
        self._recent = deque(maxlen=window)  # monotonic times of processed frames
        self.faces_in_view = 0

    def frame(self, status: str, timings: dict[str, float], faces: int, exempt: int = 0) -> None:
        """`exempt`: of the faces, those left visible (consent); the rest were anonymized."""
        self.counts["frames"] += 1
        self.counts[status] += 1
        self.counts["faces"] += faces
        self.counts["faces_exempt"] += exempt
        self.counts["faces_anonymized"] += faces - exempt
        self.faces_in_view = faces
        for k, v in timings.items():
            self.stage_ms[k].append(v)
        self._recent.append(time.monotonic())

    def fps(self) -> float:
        r = self._recent
        return (len(r) - 1) / (r[-1] - r[0]) if len(r) > 1 and r[-1] > r[0] else 0.0

    def percentiles(self) -> dict[str, dict[str, float]]:
        return {k: {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95))}
                for k, v in self.stage_ms.items() if v}

    def summary(self) -> dict:
        c = self.counts
        return {"frames": c["frames"], "ok": c["ok"], "covered": c["covered"], "dropped": c["dropped"],
                "faces_in_view": self.faces_in_view, "faces_exempt": c["faces_exempt"],
                "faces_anonymized": c["faces_anonymized"], "fps": round(self.fps(), 2),
                "stage_ms": {k: {q: round(x, 2) for q, x in v.items()} for k, v in self.percentiles().items()}}

    def line(self) -> str:
        s = self.summary()
        stages = " ".join(f"{k}={v['p50']:.1f}" for k, v in s["stage_ms"].items())
        return (f"frames={s['frames']} fps={s['fps']:.1f} faces={s['faces_in_view']} covered={s['covered']} "
                f"dropped={s['dropped']} ms(p50): {stages}")
