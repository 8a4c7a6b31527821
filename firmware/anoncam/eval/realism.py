"""Realism measures of an anonymized face against its original (numpy/OpenCV only).

Each measure is a ratio to the same measure on the original, so the original scores 1.0:
- detail_ratio: high-frequency energy (grey minus its Gaussian blur, sigma HF_SIGMA px) inside the
  face box and in the ring out to 1.5x the box; blur and smooth fills give << 1.
- seam_ratio: colour jump (Lab) and texture jump (|log| gradient-energy ratio) between narrow strips
  just inside the covered region's edge and just outside its feathered edge, at every point of the
  curve; relative to the original along the same curve (a real curve crosses edges only here and
  there, a pasted disc's edge runs all along it). The curve is the method's polygon when known,
  else the ellipse inscribed in the face box grown by mask_scale (1.4, the default cover).
- two_sample_auc: real vs anonymized crops, cross-validated L2 logistic regression; 0.5 means the
  classifier cannot tell them apart on these features.
- skin_delta: Lab distance of the inner face's mean colour (not a ratio: 0 = the original's tone).
- flicker_ratio: mean frame-to-frame change inside the face box, anonymized over original (> 1:
  flicker; < 1: steadier than the original, which also means less of its expression moves).
"""
from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

HF_SIGMA = 1.5    # px: detail = energy above ~1/(2 pi sigma) cycles/px
RING = 1.5        # the ring reaches this times the face box
CROP = 112        # px: side of the normalized crop for the two-sample features


def _grey(img: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
    return g.astype(np.float32)


def _highpass(img: np.ndarray) -> np.ndarray:
    g = _grey(img)
    return g - cv2.GaussianBlur(g, (0, 0), HF_SIGMA)


def grow(box: np.ndarray, f: float) -> np.ndarray:
    c, h = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2 * f
    return np.concatenate([c - h, c + h])


def _box_mask(shape, box: np.ndarray) -> np.ndarray:
    m = np.zeros(shape[:2], bool)
    x0, y0 = np.maximum(0, np.floor(box[:2]).astype(int))
    x1, y1 = np.ceil(box[2:]).astype(int)
    m[y0:max(y0, y1), x0:max(x0, x1)] = True
    return m


def detail_ratio(orig: np.ndarray, anon: np.ndarray, box: np.ndarray) -> tuple[float, float]:
    """(inside, ring): high-frequency energy of anon over orig in the face box and in 1.5x box minus box."""
    box = np.asarray(box, np.float64)
    inner = _box_mask(orig.shape, box)
    ring = _box_mask(orig.shape, grow(box, RING)) & ~inner
    ho, ha = _highpass(orig) ** 2, _highpass(anon) ** 2
    out = []
    for m in (inner, ring):
        e = float(ho[m].mean()) if m.any() else 0.0
        out.append(float(ha[m].mean()) / e if e > 0 else float("nan"))
    return out[0], out[1]


def ellipse(box: np.ndarray, scale: float = 1.4, n: int = 64) -> np.ndarray:
    """The ellipse inscribed in the face box, grown `scale` about its centre: (n, 2) points."""
    box = np.asarray(box, np.float64)
    c, ax = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2 * scale
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([c[0] + ax[0] * np.cos(t), c[1] + ax[1] * np.sin(t)], 1)


def _resample(poly: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n points evenly spaced along a closed polygon, and their outward unit normals."""
    p = np.asarray(poly, np.float64)
    q = np.vstack([p, p[:1]])
    seg = np.linalg.norm(np.diff(q, axis=0), axis=1)
    s = np.concatenate([[0], np.cumsum(seg)])
    t = np.linspace(0, s[-1], n, endpoint=False)
    pts = np.stack([np.interp(t, s, q[:, 0]), np.interp(t, s, q[:, 1])], 1)
    tan = np.roll(pts, -1, 0) - np.roll(pts, 1, 0)
    nrm = np.stack([tan[:, 1], -tan[:, 0]], 1)
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True) + 1e-12
    flip = np.sum((pts - pts.mean(0)) * nrm, axis=1) < 0
    nrm[flip] *= -1
    return pts, nrm


class Seam(NamedTuple):
    colour: float    # anonymized colour jump over the original's
    gradient: float  # anonymized texture jump over the original's


def _strips(img_lab: np.ndarray, grad: np.ndarray, pts, nrm, inner, outer):
    """Per curve point: mean Lab and mean gradient magnitude over the inner and outer strips."""
    res = []
    for offs in (inner, outer):
        mx = (pts[:, 0:1] + nrm[:, 0:1] * offs[None]).astype(np.float32)
        my = (pts[:, 1:2] + nrm[:, 1:2] * offs[None]).astype(np.float32)
        ok = (mx >= 0) & (my >= 0) & (mx <= img_lab.shape[1] - 1) & (my <= img_lab.shape[0] - 1)
        lab = cv2.remap(img_lab, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        g = cv2.remap(grad, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        res.append((lab.mean(1), g.mean(1), ok.all(1)))
    return res


def _jumps(img: np.ndarray, pts, nrm, inner, outer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lab = cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)
    g = _grey(img)
    grad = cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)) / 8.0
    (li, gi, oki), (lo, go, oko) = _strips(lab, grad, pts, nrm, inner, outer)
    colour = np.linalg.norm(li - lo, axis=1)
    texture = np.abs(np.log((gi + 0.5) / (go + 0.5)))
    return colour, texture, oki & oko


def seam_ratio(orig: np.ndarray, anon: np.ndarray, region: np.ndarray, feather: float = 0.0,
               width: float | None = None, scale: float = 1.4, n: int = 128) -> Seam:
    """Colour and texture jump across the paste boundary, anon over orig along the same curve.

    region: the covered polygon (k, 2), or a face box (4,) whose inscribed ellipse grown by `scale`
    stands for it. feather: px of soft edge outside the polygon (the outer strip starts beyond it).
    width: strip width in px (default 2 % of the curve's size, at least 2 px); the strips start
    1.5 px off the edge, so a hard edge's own gradient is not counted as texture."""
    region = np.asarray(region, np.float64)
    poly = ellipse(region, scale) if region.shape == (4,) else region
    size = float(np.max(poly.max(0) - poly.min(0)))
    w = max(2.0, 0.02 * size) if width is None else width
    inner = -1.5 - np.linspace(0, w, 5)
    outer = feather + 1.5 + np.linspace(0, w, 5)
    pts, nrm = _resample(poly, n)
    co, to, ok1 = _jumps(orig, pts, nrm, inner, outer)
    ca, ta, ok2 = _jumps(anon, pts, nrm, inner, outer)
    ok = ok1 & ok2
    if not ok.any():
        return Seam(float("nan"), float("nan"))
    return Seam(float(ca[ok].mean() / max(co[ok].mean(), 1e-6)), float(ta[ok].mean() / max(to[ok].mean(), 1e-6)))


def flicker_ratio(orig_frames, anon_frames, boxes) -> float:
    """Sum over consecutive frames of the mean |change| inside the face box (box of the later frame),
    anonymized over original. Frames without a box (None) break the chain."""
    num = den = 0.0
    prev = None
    for o, a, b in zip(orig_frames, anon_frames, boxes):
        if b is None:
            prev = None
            continue
        cur = (_grey(o), _grey(a))
        if prev is not None:
            m = _box_mask(o.shape, np.asarray(b, np.float64))
            if m.any():
                den += float(np.abs(cur[0] - prev[0])[m].mean())
                num += float(np.abs(cur[1] - prev[1])[m].mean())
        prev = cur
    return num / den if den > 0 else float("nan")


SKIN_SCALE = 0.8  # the inner face: the FaceMesh face oval scaled by this about its centroid
SKIN_DELTA = 8.0  # Lab units: the skin-tone target (issue 14: within this on >= 90 % of faces)


def skin_delta(orig: np.ndarray, anon: np.ndarray, landmarks: np.ndarray) -> float:
    """Distance (CIE Lab units) between the mean Lab colour of the inner face (the face oval x0.8 of
    the original's landmarks) in the anonymized image and in the original."""
    from ..detect.facemesh import FACE_OVAL
    from ..geometry import grown
    m = np.zeros(orig.shape[:2], np.uint8)
    cv2.fillPoly(m, [np.round(grown(landmarks[FACE_OVAL], SKIN_SCALE)).astype(np.int32)], 1)
    if not m.any():
        return float("nan")
    lab = [cv2.cvtColor(im.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)[m > 0].mean(0) for im in (orig, anon)]
    return float(np.linalg.norm(lab[0] - lab[1]))


# two-sample test ---------------------------------------------------------------------------------

def face_crop(img: np.ndarray, box: np.ndarray, size: int = CROP) -> np.ndarray:
    """The face box made square about its centre, resized to size x size (BGR)."""
    box = np.asarray(box, np.float64)
    c, side = (box[:2] + box[2:]) / 2, float(max(box[2:] - box[:2]))
    s = size / side
    m = np.array([[s, 0, size / 2 - s * c[0]], [0, s, size / 2 - s * c[1]]])
    return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)


def radial_spectrum(grey: np.ndarray, bins: int = 12) -> np.ndarray:
    """Log power in `bins` log-spaced radial bands (2 cycles/crop to Nyquist), Hann-windowed, minus
    their mean (so overall contrast does not count)."""
    n = grey.shape[0]
    win = np.outer(np.hanning(n), np.hanning(n))
    f = np.fft.fftshift(np.fft.fft2((grey - grey.mean()) * win))
    p = np.abs(f) ** 2
    yy, xx = np.mgrid[:n, :n] - n // 2
    r = np.hypot(xx, yy)
    edges = np.geomspace(2, n / 2, bins + 1)
    out = np.array([p[(r >= lo) & (r < hi)].mean() for lo, hi in zip(edges[:-1], edges[1:])])
    out = np.log(out + 1e-6)
    return out - out.mean()


def _native_slope(img: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Log energy ratios of the two finest octaves at native resolution inside the box (softness of
    upsampled or smoothed fills, whatever the face size)."""
    g = _grey(img)
    b = np.asarray(box, np.float64)
    m = _box_mask(g.shape, b)
    if not m.any():
        return np.zeros(2)
    e = []
    prev = g
    for s in (1.0, 2.0, 4.0):
        cur = cv2.GaussianBlur(g, (0, 0), s)
        e.append(float(((prev - cur)[m] ** 2).mean()) + 1e-6)
        prev = cur
    return np.log([e[0] / e[1], e[1] / e[2]])


def stat_features(img: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Method-independent features of one face: radial power spectrum (12), native-resolution
    octave ratios (2), Lab mean/std (6), quantiles of log gradient magnitude (4)."""
    crop = face_crop(img, box)
    g = _grey(crop)
    lab = cv2.cvtColor(crop.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab).reshape(-1, 3)
    grad = cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
    q = np.percentile(np.log(grad + 1.0), [25, 50, 75, 95])
    return np.concatenate([radial_spectrum(g), _native_slope(img, box), lab.mean(0), lab.std(0), q])


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties)."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    s = scores[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    npos, nneg = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 25) -> np.ndarray:
    """L2-penalized logistic regression by Newton's method; returns weights with the bias last."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    pen = np.full(xb.shape[1], l2)
    pen[-1] = 0.0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(xb @ w, -30, 30)))
        grad = xb.T @ (p - y) + pen * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(pen + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def two_sample_auc(real: np.ndarray, anon: np.ndarray, groups: np.ndarray | None = None, folds: int = 5,
                   repeats: int = 5, l2: float = 1.0, seed: int = 0) -> float:
    """Cross-validated AUC of a classifier telling real from anonymized feature vectors; 0.5 means
    indistinguishable. groups: one label per sample of real then anon (a face and its anonymized
    version share one, so they always fall in the same fold); default: the i-th real and the i-th
    anon sample share one (paired; every fold then holds both classes alike). Features
    are standardized on each training fold; the AUC of the pooled out-of-fold scores is averaged
    over `repeats` random fold assignments."""
    x = np.vstack([real, anon]).astype(np.float64)
    y = np.r_[np.zeros(len(real)), np.ones(len(anon))]
    rng = np.random.default_rng(seed)
    if groups is None:
        groups = np.r_[np.arange(len(real)), np.arange(len(anon))]
    groups = np.asarray(groups)
    uniq = np.unique(groups)
    out = []
    for _ in range(repeats):
        fold_of = dict(zip(rng.permutation(uniq), np.arange(len(uniq)) % folds))
        f = np.array([fold_of[g] for g in groups])
        scores = np.zeros(len(y))
        for k in range(folds):
            te, tr = f == k, f != k
            if not te.any() or len(np.unique(y[tr])) < 2:
                continue
            mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-9
            w = fit_logistic((x[tr] - mu) / sd, y[tr], l2)
            scores[te] = np.hstack([(x[te] - mu) / sd, np.ones((te.sum(), 1))]) @ w
        out.append(auc(scores, y.astype(bool)))
    return float(np.mean(out))
