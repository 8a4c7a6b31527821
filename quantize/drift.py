"""Drift of an int8 model against its fp32 original, and the gates.

  yunet      recall on the 7 test photos (23 hand-counted faces) with the runtime's settings (320 px,
             2x2 tiles on stills), false boxes, box agreement (IoU of matched boxes) fp32 vs int8;
             on clip frames: fp32 boxes as the reference, int8 recall and IoU against them; latency.
  generator  PSNR (over the generated, covered region; the whole crop also reported) and SSIM (whole
             128x128 crop) of the int8 output against the fp32 output on real faces (clip frames and
             the group photos through YuNet + FaceMesh + generator_input, identities from the bank).
  sface      cosine of int8 and fp32 embeddings on aligned crops (ORL s21-s40, photo and clip faces);
             fp32 rewrite vs cv2.FaceRecognizerSF on the shipped int8bq file.
"""
from __future__ import annotations

import time

import cv2
import numpy as np
import onnx
from anoncam import assets
from anoncam.detect import iou

from . import calib


class _Recorder:
    """A backend that runs another one and keeps every input (the exact runtime tensors)."""

    def __init__(self, backend):
        self.backend = backend
        self.name = backend.name
        self.input_shape = backend.input_shape
        self.inputs: list[np.ndarray] = []

    def run(self, x):
        self.inputs.append(np.array(x, np.float32, copy=True))
        return self.backend.run(x)


class _Session:
    """An onnxruntime session as an anoncam Backend (1 thread)."""
    name = "onnxruntime"

    def __init__(self, model: onnx.ModelProto, threads: int = 1):
        from .core import session
        self.session = session(model, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in self.session.get_inputs()[0].shape)

    def run(self, x):
        return self.session.run(None, {self.input_name: x})


def _ms(sess: _Session, x: np.ndarray, n: int = 60) -> float:
    for _ in range(5):
        sess.run(x)
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        sess.run(x)
        ts.append((time.perf_counter() - t) * 1000)
    return float(np.median(ts))


# ------------------------------------------------------------------------------------ detector

def _yunet(backend):
    from anoncam.config import DetectConfig
    from anoncam.detect.yunet import YuNet
    d = DetectConfig()
    return YuNet(backend, score_threshold=d.score_threshold, nms_threshold=d.nms_threshold, tile=d.tile)


def _min_face(still: bool) -> int:
    from anoncam.config import DetectConfig
    d = DetectConfig()
    return d.min_face if still else d.video_min_face


def _match_centres(boxes, centres):
    hits = np.array([[b[0] <= x <= b[2] and b[1] <= y <= b[3] for (x, y) in centres] for b in boxes],
                    bool).reshape(len(boxes), len(centres))
    return int((hits.sum(0) > 0).sum()), int((hits.sum(1) == 0).sum())


def _agreement(ref, got, thr=0.5):
    """fp32 boxes `ref` vs int8 boxes `got`: matched count (IoU >= thr), IoUs of the best matches, extras."""
    ious, used = [], set()
    for r in ref:
        best, bj = 0.0, -1
        for j, g in enumerate(got):
            if j not in used:
                o = iou(r, g)
                if o > best:
                    best, bj = o, j
        if best >= thr:
            used.add(bj)
        ious.append(best)
    return sum(o >= thr for o in ious), ious, len(got) - len(used)


class Detector:
    calibration_from = ("clip frames 0,100,200,.. of franck, cap12 (12 each) and 0,60,.. of cap13; the "
                        "small-faces photo; coffee (no face); run through YuNet exactly as at run time "
                        "(the pyramid for detect.video_min_face on clip frames, detect.min_face on the "
                        "photos) so every input scale the runtime sees is calibrated")
    evaluation_from = ("6 group photos + astronaut (23 hand-counted faces, default detect settings, "
                       "stills pyramid); clip frames 50,150,.. (franck, cap12) and 30,90,.. (cap13), 12 each")

    def calibration(self, src) -> list[np.ndarray]:
        rec = _Recorder(_Session(src.model))
        det = _yunet(rec)
        imgs = calib.calibration_images()
        for i, img in enumerate(imgs):
            det.detect(img, min_face=_min_face(still=i >= len(imgs) - 2))  # the last two are photos
        return rec.inputs

    def compare(self, fp32: onnx.ModelProto, int8: onnx.ModelProto) -> dict:
        return detector_drift(_Session(fp32), _Session(int8))


def detector_drift(a, b, latency: bool = True) -> dict:
    """fp32 backend `a` vs int8 backend `b` (anoncam Backends) through YuNet with the runtime settings."""
    da, db = _yunet(a), _yunet(b)
    photos = {"faces": 0, "fp32_found": 0, "int8_found": 0, "fp32_false": 0, "int8_false": 0, "per_photo": {}}
    all_ious = []
    for name, centres in calib.FACES.items():
        img = calib.read(name)
        ba = [d.box for d in da.detect(img, min_face=_min_face(True))]
        bb = [d.box for d in db.detect(img, min_face=_min_face(True))]
        fa, xa = _match_centres(ba, centres)
        fb, xb = _match_centres(bb, centres)
        _, ious, _ = _agreement(ba, bb)
        all_ious += ious
        photos["faces"] += len(centres)
        photos["fp32_found"] += fa
        photos["int8_found"] += fb
        photos["fp32_false"] += xa
        photos["int8_false"] += xb
        photos["per_photo"][name] = {"faces": len(centres), "fp32": fa, "int8": fb}
    photos["fp32_recall"] = 100.0 * photos["fp32_found"] / photos["faces"]
    photos["int8_recall"] = 100.0 * photos["int8_found"] / photos["faces"]
    photos["box_iou_mean"] = float(np.mean(all_ious)) if all_ious else None
    photos["box_iou_min"] = float(np.min(all_ious)) if all_ious else None
    clips = {"frames": 0, "fp32_boxes": 0, "int8_matched": 0, "int8_extra": 0}
    cious = []
    for name, frames in calib.eval_clip_frames().items():
        for f in frames:
            ba = [d.box for d in da.detect(f, min_face=_min_face(False))]
            bb = [d.box for d in db.detect(f, min_face=_min_face(False))]
            m, ious, extra = _agreement(ba, bb)
            clips["frames"] += 1
            clips["fp32_boxes"] += len(ba)
            clips["int8_matched"] += m
            clips["int8_extra"] += extra
            cious += [o for o in ious if o > 0]
    clips["fp32_recall"] = 100.0
    clips["int8_recall_vs_fp32"] = 100.0 * clips["int8_matched"] / max(1, clips["fp32_boxes"])
    clips["box_iou_mean"] = float(np.mean(cious)) if cious else None
    x = np.random.default_rng(0).random((1, 3, 256, 320), np.float32) * 255
    lat = {"input": "1x3x256x320 (a 320x240 frame padded to 256)", "threads": 1,
           "fp32_ms": _ms(a, x), "int8_ms": _ms(b, x)} if latency else None
    return {"photos": photos, "clips": clips, "latency": lat}


# ------------------------------------------------------------------------------------ generator

def _faces_for_generator(images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(crop 128x128, landmarks in the crop) of every face YuNet + FaceMesh find, as at run time."""
    from anoncam.anonymize.generative import IdentityBank
    from anoncam.backends import open_model
    from anoncam.detect.facemesh import FaceMesh
    from anoncam.detect.yunet import YuNet
    det = YuNet.from_file(assets.model_path("yunet"), threads=1)
    mesh = FaceMesh(open_model(assets.model_path("facemesh"), "tflite", threads=1), 0.5)
    bank = IdentityBank(assets.model_path("generator_identities"))
    out = []
    for img in images:
        for d in det.detect(img, min_face=_min_face(False)):
            pts, _ = mesh.run(img, *FaceMesh.region_from_box(d.box, d.kps))
            if pts is None or max(d.box[2:] - d.box[:2]) < 40:
                continue
            crop, p, _ = bank.geo.crop(img, pts)
            out.append((crop, p))
    return out


def _generator_inputs(images) -> list[np.ndarray]:
    from anoncam.anonymize import facegen as fg
    from anoncam.anonymize.generative import IdentityBank
    bank = IdentityBank(assets.model_path("generator_identities"))
    xs = []
    for i, (crop, pts) in enumerate(_faces_for_generator(images)):
        x, _ = fg.generator_input(bank.geo, crop, pts, bank.textures[(7 * i) % len(bank.textures)], 1.25)
        xs.append(x.astype(np.float32))
    return xs


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Gaussian 11x11, sigma 1.5) over channels, images in 0..1 (HxWxC)."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    vals = []
    for ch in range(a.shape[2]):
        x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
        blur = lambda z: cv2.GaussianBlur(z, (11, 11), 1.5)
        mx, my = blur(x), blur(y)
        sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        vals.append(s.mean())
    return float(np.mean(vals))


class Generator:
    calibration_from = ("faces found by YuNet + FaceMesh in the calibration clip frames (franck, cap12, "
                        "cap13), through generator_input with bank identities")
    evaluation_from = "faces in the held-out clip frames and the 6 group photos + astronaut"

    def calibration(self, src) -> list[np.ndarray]:
        return _generator_inputs(calib.calibration_images())

    def compare(self, fp32, int8) -> dict:
        imgs = [f for fs in calib.eval_clip_frames().values() for f in fs]
        imgs += [calib.read(n) for n in calib.FACES]
        xs = _generator_inputs(imgs)
        a, b = _Session(fp32), _Session(int8)
        ps, pc, ss = [], [], []
        for x in xs:
            ya = np.clip(a.run(x)[0][0].transpose(1, 2, 0), 0, 1)
            yb = np.clip(b.run(x)[0][0].transpose(1, 2, 0), 0, 1)
            ps.append(min(psnr(ya, yb), 100.0))
            cover = x[0, 10] > 0.5  # the generated region (outside it the context passes through)
            pc.append(min(psnr(ya[cover], yb[cover]), 100.0) if cover.any() else 100.0)
            ss.append(ssim(ya, yb))
        x = xs[0]
        return {"faces": len(xs), "psnr_db_mean": float(np.mean(pc)), "psnr_db_min": float(np.min(pc)),
                "psnr_db_whole_crop_mean": float(np.mean(ps)),
                "ssim_mean": float(np.mean(ss)), "ssim_min": float(np.min(ss)),
                "latency": {"input": "1x11x128x128", "threads": 1, "fp32_ms": _ms(a, x, 30),
                            "int8_ms": _ms(b, x, 30)}}


# ------------------------------------------------------------------------------------ recognizer

def _aligned(images: list[np.ndarray], upscale: float = 1.0) -> list[np.ndarray]:
    """SFace inputs (1x3x112x112, RGB 0..255 as cv2.FaceRecognizerSF feeds them) of every face."""
    from anoncam.detect.yunet import YuNet
    det = YuNet.from_file(assets.model_path("yunet"), threads=1, size=640, tiles=0, score_threshold=0.5)
    rec = cv2.FaceRecognizerSF.create(str(assets.model_path("sface")), "")
    out = []
    for img in images:
        if upscale != 1.0:
            img = cv2.resize(img, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
        for d in det.detect(img, tiles="none"):
            b = d.box
            row = np.array([[b[0], b[1], b[2] - b[0], b[3] - b[1], *d.kps.reshape(-1), d.score]], np.float32)
            crop = rec.alignCrop(img, row)
            out.append(cv2.dnn.blobFromImage(crop, 1.0, (112, 112), (0, 0, 0), swapRB=True))
    return out


def _cos(a, b):
    a, b = a.reshape(-1), b.reshape(-1)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


class Recognizer:
    calibration_from = "aligned crops of ORL people s1-s20 (shots 1-5) and the calibration clip frames"
    evaluation_from = "aligned crops of ORL people s21-s40 (shots 1, 6), the group photos and held-out clip frames"

    def calibration(self, src) -> list[np.ndarray]:
        return _aligned(calib.orl(range(1, 21), (1, 2, 3, 4, 5)), 2.0) + _aligned(calib.calibration_images())

    def compare(self, fp32, int8) -> dict:
        xs = _aligned(calib.orl(range(21, 41), (1, 6)), 2.0)
        xs += _aligned([calib.read(n) for n in calib.FACES] + [f for fs in calib.eval_clip_frames().values()
                                                                for f in fs])
        a, b = _Session(fp32), _Session(int8)
        cos = [_cos(a.run(x)[0], b.run(x)[0]) for x in xs]
        # the rewrite itself: our fp32 graph vs OpenCV running the shipped int8bq file
        rec = cv2.FaceRecognizerSF.create(str(assets.model_path("sface")), "")
        ref = []
        for x in xs[:20]:
            crop = cv2.cvtColor(x[0].transpose(1, 2, 0).astype(np.uint8), cv2.COLOR_RGB2BGR)
            ref.append(_cos(rec.feature(crop), a.run(x)[0]))
        return {"faces": len(xs), "cosine_mean": float(np.mean(cos)), "cosine_min": float(np.min(cos)),
                "cosine_p5": float(np.percentile(cos, 5)),
                "fp32_rewrite_vs_cv2_int8bq_cosine_min": float(np.min(ref)),
                "latency": {"input": "1x3x112x112", "threads": 1, "fp32_ms": _ms(a, xs[0], 20),
                            "int8_ms": _ms(b, xs[0], 20)}}


EVALUATORS = {"yunet": Detector, "generator": Generator, "sface": Recognizer}


# ------------------------------------------------------------------------------------ gates

def check(name: str, m: dict, gates: dict) -> list[dict]:
    out = []
    if name == "yunet" and "recall_drop_points" in gates:
        lim = gates["recall_drop_points"]
        p, c = m["photos"], m["clips"]
        out.append({"gate": "photo recall drop <= %g points" % lim, "value": p["fp32_recall"] - p["int8_recall"],
                    "pass": p["fp32_recall"] - p["int8_recall"] <= lim})
        out.append({"gate": "clip recall (vs fp32) drop <= %g points" % lim,
                    "value": 100.0 - c["int8_recall_vs_fp32"], "pass": 100.0 - c["int8_recall_vs_fp32"] <= lim})
    if name == "generator" and "psnr_db" in gates:
        out.append({"gate": "PSNR >= %g dB" % gates["psnr_db"], "value": m["psnr_db_mean"],
                    "pass": m["psnr_db_mean"] >= gates["psnr_db"]})
    if name == "sface" and "cosine_mean" in gates:
        out.append({"gate": "mean cosine >= %g" % gates["cosine_mean"], "value": m["cosine_mean"],
                    "pass": m["cosine_mean"] >= gates["cosine_mean"]})
    for g in out:
        g["value"] = round(float(g["value"]), 4)
    return out


def markdown(rep: dict) -> str:
    m = rep["metrics"]
    lines = [f"# int8 drift report: {rep['model']}", "",
             f"- fp32: `{rep['fp32']['path']}` sha256 {rep['fp32']['sha256']} ({rep['fp32']['bytes']:,} B)",
             f"- int8: sha256 {rep['int8']['sha256']} ({rep['int8']['bytes']:,} B), key {rep['key']}",
             f"- installed: **{rep['installed']}**", f"- ops left in float: {', '.join(rep['int8']['float_ops']) or 'none'}",
             f"- calibration: {rep['calibration']['inputs']} inputs, shapes {', '.join(rep['calibration']['shapes'])}",
             "- speed on this CPU (runtime.precision auto): " + (
                 "int8 {int8_ms} ms, fp32 {fp32_ms} ms -> {choice} ({cpu})".format(**rep["speed"])
                 if rep.get("speed") else "not timed (not installed)"),
             ""]
    for n in rep["notes"]:
        lines.append(f"- note: {n}")
    lines += ["", "| gate | value | pass |", "|---|---|---|"]
    lines += [f"| {g['gate']} | {g['value']} | {'yes' if g['pass'] else 'NO'} |" for g in rep["gates"]]
    lines += ["", "```json", __import__("json").dumps(m, indent=2), "```", ""]
    return "\n".join(lines)
