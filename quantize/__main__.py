"""python -m quantize [build] [NAME...] | python -m quantize tflite [NAME...] | python -m quantize list"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from anoncam import assets, precision

from . import core


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m quantize", description=__doc__)
    p.add_argument("action", nargs="?", default="build", choices=["build", "tflite", "list"])
    p.add_argument("names", nargs="*", help=f"models (default: all of {', '.join(core.MODELS)} that exist)")
    p.add_argument("--force", action="store_true", help="rebuild even if the int8 file is installed")
    p.add_argument("--generator", type=Path, help="the generator's fp32 ONNX (default: manifest / models/generator)")
    p.add_argument("--gate", action="append", default=[], metavar="KEY=VALUE",
                   help="override a gate, e.g. recall_drop_points=0.5, psnr_db=32, cosine_mean=0.98")
    p.add_argument("--out-root", type=Path, help="write under this folder instead of the anoncam cache")
    a = p.parse_args(argv)
    names = a.names or list(core.MODELS)
    unknown = [n for n in names if n not in core.MODELS]
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(core.MODELS)}")
    if a.action == "list":
        for n in names:
            try:
                src = core.source(n, a.generator)
            except (core.QuantizeError, assets.AssetError) as e:
                print(f"{n:10} -  {e}")
                continue
            d = precision.int8_dir(n, src.sha256)
            state = "installed" if (d / "model.onnx").is_file() else (
                "REJECTED" if (d / "report.json").is_file() else "not built")
            auto = ""
            if state == "installed":
                rep = json.loads((d / "report.json").read_text())
                choice, why = precision.speed_choice(rep)
                auto = f"  auto: {choice or 'fp32'} ({why})"
            print(f"{n:10} {state:10} {d}{auto}")
        return 0
    if a.action == "tflite":
        from . import tflite
        bad = 0
        for n in a.names or ["yunet"]:
            rep = tflite.build(n)
            bad += "error" in rep
            print(json.dumps({k: v for k, v in rep.items() if k not in ("error",)}, indent=2))
            if "error" in rep:
                print(rep["error"], file=sys.stderr)
        return 1 if bad else 0
    gates: dict[str, float] = {}
    for g in a.gate:
        k, _, v = g.partition("=")
        gates[k] = float(v)
    failed = 0
    for n in names:
        if n == "generator" and not a.names and core.generator_path(a.generator) is None:
            print("generator: no fp32 ONNX yet (models/generator/generator.onnx); skipped", file=sys.stderr)
            continue
        try:
            rep = core.build(n, gates={k: v for k, v in gates.items() if k in core.DEFAULT_GATES.get(n, {})} or None,
                             out_root=a.out_root, force=a.force, generator=a.generator,
                             log=lambda s: print(s, file=sys.stderr))
        except (core.QuantizeError, assets.AssetError) as e:
            print(f"{n}: {e}", file=sys.stderr)
            failed += 1
            continue
        for g in rep["gates"]:
            print(f"{n:10} {g['gate']:45} {g['value']:>10} {'pass' if g['pass'] else 'FAIL'}")
        failed += not rep["installed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
