"""Quick realism loop for development: `python -m anoncam.eval.realism_quick [--faces 24] [--orl 0]`.

The realism measures of `anoncam eval --realism` (realism_run.measure_faces) on a subset of its
held-out faces (`--faces`, spread evenly over face sizes, every kind kept), one identity key, no
clips; optionally face-api ORL rank-1 on `--orl` people. A few minutes instead of ~20; the figures
are noisier (AUC on 24 pairs), so a change is judged here and confirmed by the full eval. Writes
realism_quick.json and realism_faces.png (original faces: never commit it) to --out.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

from ..config import Config, override
from ..keys import identity_key
from . import realism_run
from .core import BASELINE, MethodRun, open_method
from .faceapi import FaceApiNet
from .metrics import Instruments


def subset(faces: list[dict], n: int) -> list[dict]:
    """n faces spread evenly over the sizes (every kind at least once when n allows)."""
    if n >= len(faces):
        return faces
    order = sorted(range(len(faces)), key=lambda i: faces[i]["det"].size)
    pick = {order[int(round(j))] for j in np.linspace(0, len(order) - 1, n)}
    for kind in dict.fromkeys(f["kind"] for f in faces):
        if not any(faces[i]["kind"] == kind for i in pick):
            pick.add(next(i for i in order if faces[i]["kind"] == kind))
    return [faces[i] for i in sorted(pick)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m anoncam.eval.realism_quick")
    ap.add_argument("--methods", default="generative")
    ap.add_argument("--faces", type=int, default=24)
    ap.add_argument("--orl", type=int, default=0, help="face-api ORL rank-1 on this many people (0: none)")
    ap.add_argument("--out", type=Path, default=Path("out/realism_quick"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bank", type=Path, help="generative: an identity bank not (yet) in the manifest")
    ap.add_argument("--refiner", type=Path, help="generative: an experimental refiner ONNX (models/refiner)")
    ap.add_argument("--identity-key", type=Path, help="a fixed identity key file (as `anonymize --identity-key`): "
                    "runs compare like for like; without it each run draws a random key")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config setting for every method, e.g. anonymize.generative_mask_scale=1.5 (repeatable)")
    a = ap.parse_args(argv)
    if a.bank:
        from ..anonymize import generative as G
        G.GENERATIVE.prepare()
        G.GENERATIVE.bank = G.IdentityBank(a.bank)
    if a.refiner:
        from ..anonymize import generative as G
        from ..backends import open_model
        G.GENERATIVE.refiner = open_model(a.refiner, "onnx", threads=a.threads)
    t0 = time.time()
    cv2.setNumThreads(a.threads)
    sets = dict(kv.split("=", 1) for kv in a.set)
    cfg = override(Config(), **{"runtime.threads": a.threads, **{k: yaml.safe_load(v) for k, v in sets.items()}})
    inst = Instruments(a.threads)
    runs = {BASELINE: MethodRun(BASELINE, None)}
    for name in a.methods.split(","):
        pipe, why = open_method(name, cfg)
        if pipe is None:
            raise SystemExit(f"{name}: {why}")
        if a.identity_key:
            pipe.anonymizer.key = identity_key(a.identity_key.read_bytes())
        runs[name] = MethodRun(name, pipe)
    faces = subset(realism_run.held_out(inst, 40), a.faces)
    net = FaceApiNet(a.threads)
    res, rows = realism_run.measure_faces(inst, net, runs, faces)
    out = {"faces": len(faces), "methods": {k: {x: v[x] for x in (*realism_run.KEYS, "skin_delta", "skin_within",
                                                                   "auc_stats", "auc_faceapi", "mouth",
                                                                   "mouth_facemesh", "smile_fer", "expression_class")}
                                            for k, v in res.items()}}
    if a.orl:
        out["faceapi_orl"] = {k: v["rank1"] for k, v in realism_run.faceapi_orl(inst, net, runs, a.orl).items()}
    out["seconds"] = round(time.time() - t0, 1)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "realism_quick.json").write_text(json.dumps(realism_run._clean(out), indent=1))
    names = [n for n in runs if n != BASELINE]
    cv2.imwrite(str(a.out / realism_run.FACES_PNG), realism_run.faces_sheet(rows, names, per_row=4))
    print(json.dumps(realism_run._clean(out), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
