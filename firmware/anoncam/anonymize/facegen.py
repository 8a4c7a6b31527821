"""Geometry and inputs of the face generator (numpy + OpenCV only; shared by runtime and training).

Canonical frame: a 128x128 crop in which the mean FaceMesh shape (from the identity bank) has its
face-oval centroid at (64, 64) and forehead-to-chin height 76 px. A face is aligned to it by a
least-squares similarity over its 468 landmarks. Textures of synthetic identities live in this
frame; they are moved onto a face's mesh by a piecewise-affine warp over a fixed triangulation of
the mean shape plus two rings of helper points outside the face.

The generator's input (`generator_input`), channels first, all in [0, 1]:
  0-2  the synthetic identity's texture warped onto this face's mesh, recoloured skin to skin
       (4x4 grids of mean BGR over the skin of each, skin_mask) and desaturated to the face's
       saturation, then its mean skin colour set to the face's; zero where invalid
  3    validity of 0-2 (inside the identity's face oval x1.1, outside this face's open mouth)
  4-6  this face's lighting: a 4x4 grid of mean BGR over its face oval x1.1, bilinearly upsampled
  7-9  this crop with the covered region (face oval grown by mask_scale) set to zero (BGR)
  10   the covered region (1 inside)
Nothing else of the original face reaches the generator.
"""
from __future__ import annotations

import threading
import warnings
from typing import NamedTuple

import cv2
import numpy as np

from ..detect.facemesh import FACE_OVAL
from ..geometry import apply_affine, grown
from ..geometry import similarity as _similarity

SIZE = 128
OVAL_HEIGHT = 76.0  # forehead (10) to chin (152) in the canonical crop
GRID = 4
SHAPE_PULL = 1.0  # run time: the mesh moves this far toward the synthetic identity's own face shape
ID_OVAL_SCALE = 1.1  # identity texture is valid inside its face oval grown by this
# Geometry.identity_valid: identity pixels are kept over brows, eyes, nose and lips (FaceMesh
# indices, hull); elsewhere not where darker than DARK_EDGE x, or HUE_EDGE (|da| + |db|, 8-bit Lab)
# off, the median colour inside the face oval scaled by INNER_BAND (hair, glasses, backdrop)
FEATURES = np.array([70, 63, 105, 66, 107, 336, 296, 334, 293, 300, 46, 276, 61, 291, 17, 0, 146, 375,
                     2, 98, 327])
INNER_BAND = 0.8
DARK_EDGE = 0.75
HUE_EDGE = 16.0
IN_CHANNELS = 11
GAIN_SPREAD = 1.35  # recolouring: a cell's gain stays within this factor of the whole face's
# inner lip contour (MediaPipe FACEMESH_LIPS, inner ring), in order
INNER_LIPS = np.array([78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178,
                       88, 95])
# the lip contours, corner to corner (MediaPipe FACEMESH_LIPS): outer and inner, upper and lower
UPPER_OUTER = np.array([61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291])
LOWER_OUTER = np.array([61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291])
UPPER_INNER = np.array([78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308])
LOWER_INNER = np.array([78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308])
OUTER_LIPS = np.concatenate([UPPER_OUTER, LOWER_OUTER[1:-1]])
LIP_TINT = np.float32([0.7, 0.68, 0.92])  # draw_lips: BGR gain of lips over the skin under them
LIP_ALPHA = 0.9     # ... how much of it is applied
SLIT_DARK = 0.45    # ... darkening along the line between the lips and at the corners
CORNER_PAST = 0.02  # ... that line carried past each corner, over the mouth's width
RING_SCALES = (1.45, 2.2)
SHADE_RANGE = (0.45, 1.5)  # relighting (face_shading): the ratio's limits
PERIPH_BAND = (0.75, 1.0)  # periphery_gain: the skin in this band of the face oval's radius ...
PERIPH_INNER = 0.6         # ... over the skin inside this radius, per angular sector ...
PERIPH_SECTORS = 8
PERIPH_RANGE = (0.6, 1.15)  # ... the rendering's taken to the original's, within these limits
PERIPH_FROM = (0.5, 0.85)  # radius over which the correction sets in
NORMAL_SOFT = 3.5   # canonical px: the depth map is smoothed this much before its normals are taken
RING_MIRROR = True  # render_sharp: the covered ring outside the face is the surroundings reflected in
MOUTH_OPEN = 1.5    # crop px: inner lips closer than this are a closed mouth (draw_mouth)
MOUTH_DARK = 0.3    # the cavity's brightness over the lips'
TEETH_FROM = 0.08   # draw_mouth: teeth show from this opening over the mouth's width (full at twice)
TEETH_FILL = 0.85   # ... at most this much of the opening
TEETH_BRIGHT = (1.3, 0.15, 0.95)  # ... lit as skin x a + b, at most c
TEETH_GAP = 0.07    # ... darkening between the teeth
ZONE_SOFT = 1.5     # crop px: softness of the face zone's edge before the band-wise blend
# mirror_ring squeeze: the ring reads the surroundings within this x its own depth past the covered
# edge (stretched radially when < 1). 0.5 pulled in fewer hat brims and arms as horns, but
# realism_quick measured less detail (inside 0.76 -> 0.63, ring 0.73 -> 0.67): a plain reflection
MIRROR_SQUEEZE = 1.0
FACE_ZONE = 1.0     # ... outside the identity's own pixels and its face oval scaled by this
MIRROR_DOWN = (35.0, 65.0)  # degrees from straight down: the ring's own colours below the first, mirror past the second
# the covered ring outside the face zone (render_sharp, ring_fill): its colours are the original's
# there, low-passed by RING_LOW crop px (outside the face zone only: hair stays hair-coloured, the neck
# skin-coloured); on the top and sides the reflected surroundings are kept as they are where their
# colours (low-passed by RING_TEX) depart from those by less than RING_DEPART[0] (0..1), and give way
# to them by RING_DEPART[1], keeping only their fine grain (RING_GRAIN crop px, within +-RING_GRAIN_MAX)
RING_LOW = 10.0
RING_TEX = 10.0
RING_DEPART = (0.06, 0.14)
RING_GRAIN = 1.0
RING_GRAIN_MAX = 0.05
RING_EDGE = 2.0  # crop px: the ring's own colours turn into the surroundings' over about 2x this inside the covered edge
# skin (skin_mask): the face oval scaled by SKIN_OVAL minus each eye with its brow and the lips
# (FaceMesh indices; their hulls grown by FEATURE_GROW about their centroids). The recolouring is
# measured there only, on the original and on the identity alike: skin to skin, no hair, eyes,
# brows, lips or backdrop in the statistics
SKIN_OVAL = 0.95
# draw_eyes: each eye's upper and lower lid, outer corner to inner (MediaPipe FACEMESH_RIGHT_EYE,
# FACEMESH_LEFT_EYE), and the iris colours (BGR at skin brightness 0.6) an identity may get
EYE_LIDS = ((np.array([33, 246, 161, 160, 159, 158, 157, 173, 133]), np.array([33, 7, 163, 144, 145, 153, 154, 155, 133])),
            (np.array([263, 466, 388, 387, 386, 385, 384, 398, 362]), np.array([263, 249, 390, 373, 374, 380, 381, 382, 362])))
IRIS_COLOURS = np.float32([[0.10, 0.15, 0.24], [0.12, 0.2, 0.3], [0.08, 0.12, 0.19], [0.13, 0.22, 0.3],
                           [0.15, 0.22, 0.24], [0.24, 0.23, 0.21], [0.11, 0.18, 0.27], [0.09, 0.14, 0.2]])
FEATURE_GROW = 1.2
EYE_SHUT = (0.06, 0.12)  # open_eyes: an eye open (gap over width) under the first is drawn shut, over the second as it is
EYELID_DARK = 0.92   # ... a lowered eyelid is the skin around the eye this much darker
EYE_BROWS = (np.array([70, 63, 105, 66, 107, 55, 65, 52, 53, 46, 33, 7, 163, 144, 145, 153, 154, 155,
                       133, 173, 157, 158, 159, 160, 161, 246]),
             np.array([300, 293, 334, 296, 336, 285, 295, 282, 283, 276, 263, 249, 390, 373, 374, 380,
                       381, 382, 362, 398, 384, 385, 386, 387, 388, 466]))


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """geometry.similarity in float32, as the renderer's warps take it."""
    return _similarity(src, dst).astype(np.float32)


def with_ring(pts: np.ndarray) -> np.ndarray:
    """The 468 landmarks plus helper rings (the face oval grown about its centroid), so the
    piecewise-affine warp covers the whole crop."""
    oval = pts[FACE_OVAL]
    c = oval.mean(0)
    rings = [c + (oval[::2] - c) * s for s in RING_SCALES]
    return np.concatenate([pts, *rings]).astype(np.float32)


def oval_polygon(pts: np.ndarray, scale: float) -> np.ndarray:
    """Face oval grown by `scale` about its centroid (as anonymize.masks.face_polygon)."""
    return grown(pts[FACE_OVAL], scale)


def normalize_mean_shape(shapes: np.ndarray) -> np.ndarray:
    """Generalized Procrustes mean of (N, 468, 2) shapes, placed in the canonical crop."""
    mean = shapes[0].astype(np.float64)
    for _ in range(4):
        aligned = np.stack([apply_affine(similarity(s, mean), s) for s in shapes])
        mean = aligned.mean(0)
    h = np.linalg.norm(mean[152] - mean[10])
    d = mean[152] - mean[10]
    ang = np.arctan2(d[0], d[1])  # make the face upright: chin straight below forehead
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    mean = (mean - mean[FACE_OVAL].mean(0)) @ rot.T * (OVAL_HEIGHT / h)
    return (mean + SIZE / 2).astype(np.float32)


def triangulate(mean_shape: np.ndarray) -> np.ndarray:
    """Delaunay triangles (T, 3) over the mean shape plus its helper rings."""
    pts = with_ring(mean_shape).astype(np.float64)
    lo, hi = pts.min(0) - 10, pts.max(0) + 10
    sub = cv2.Subdiv2D((int(lo[0]), int(lo[1]), int(hi[0] - lo[0]) + 1, int(hi[1] - lo[1]) + 1))
    for p in pts:
        sub.insert((float(p[0]), float(p[1])))
    tris = []
    for t in sub.getTriangleList().reshape(-1, 3, 2):
        idx = [int(np.argmin(((pts - v) ** 2).sum(1))) for v in t]
        if len(set(idx)) == 3 and all(((pts[i] - v) ** 2).sum() < 1e-6 for i, v in zip(idx, t)):
            tris.append(idx)
    return np.array(tris, np.int32)


def _area2(p: np.ndarray) -> np.ndarray:
    """Twice the signed area of triangles p (T, 3, 2)."""
    return ((p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1])
            - (p[:, 2, 0] - p[:, 0, 0]) * (p[:, 1, 1] - p[:, 0, 1]))


def piecewise_map(src: np.ndarray, dst: np.ndarray, tris: np.ndarray, size: int = SIZE,
                  use: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """remap() maps for moving an image whose points are `src` so they land on `dst` (both with
    rings, crop pixels): per pixel, the affine of the triangle that covers it; -1000 where no
    triangle does. `use` (bool per triangle) limits the map to those triangles."""
    pix, tt, w = locate(src, dst, tris, size, use)
    sv = src[tris].astype(np.float32)[tt]  # (P, 3, 2)
    mx = np.full(size * size, -1000, np.float32)
    my = np.full(size * size, -1000, np.float32)
    mx[pix] = w[0] * sv[:, 0, 0] + w[1] * sv[:, 1, 0] + w[2] * sv[:, 2, 0]
    my[pix] = w[0] * sv[:, 0, 1] + w[1] * sv[:, 1, 1] + w[2] * sv[:, 2, 1]
    return mx.reshape(size, size), my.reshape(size, size)


def locate(src: np.ndarray, dst: np.ndarray, tris: np.ndarray, size: int = SIZE,
           use: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """For the pixels of a size x size image covered by the triangles at `dst`: flat pixel index,
    triangle index, and the three barycentric weights. `src` only ranks triangles (those flipped
    between src and dst rank lowest). Vectorized: every triangle tests the pixels of its bounding
    box at once."""
    s = src[tris].astype(np.float64)
    d = dst[tris].astype(np.float64)  # (T, 3, 2)
    ad = _area2(d)
    # triangles that flipped between src and dst face away (the far side of a turned head): they
    # rank lowest, then the rest from thin to large: a pixel on a border goes to the larger
    # triangle, whose affine extrapolates least
    flipped = np.sign(_area2(s)) != np.sign(ad)
    front = np.flatnonzero(~flipped)
    order = np.concatenate([np.flatnonzero(flipped), front[np.argsort(np.abs(ad[front]), kind="stable")]])
    # barycentric coordinates from dst pixels: rows per vertex, columns (x, y, 1)
    # (closed form of the inverse of [[x0 x1 x2], [y0 y1 y2], [1 1 1]])
    x, y = d[..., 0], d[..., 1]
    ok = np.abs(ad) > 1e-9
    inv = 1.0 / np.where(ok, ad, 1.0)
    j, k2 = [1, 2, 0], [2, 0, 1]
    bary = np.stack([y[:, j] - y[:, k2], x[:, k2] - x[:, j], x[:, j] * y[:, k2] - x[:, k2] * y[:, j]], 2)
    bary *= inv[:, None, None]
    bary[~ok] = np.array([[0.0, 0.0, 1.0 / 3.0]] * 3)  # collapsed: its centroid
    # the same scaled to pixels of distance from each edge (height over edge i = |2A| / |edge i|)
    edge = np.linalg.norm(d[:, [2, 0, 1]] - d[:, [1, 2, 0]], axis=2)
    dist = bary * (np.abs(ad)[:, None] / np.maximum(edge, 1e-9))[..., None]
    # rasterize: each triangle claims the pixels of its box within half a pixel of it
    od = d[order]
    lo = np.clip(np.floor(od.min(1) - 0.5), 0, size).astype(np.int64)
    hi = np.clip(np.ceil(od.max(1) + 0.5), -1, size - 1).astype(np.int64)
    wh = np.maximum(hi - lo + 1, 0)
    n = wh[:, 0] * wh[:, 1]
    keep = (n > 0) & ok[order] & (True if use is None else use[order])
    order, lo, wh, n = order[keep], lo[keep], wh[keep], n[keep]
    rep = np.repeat(np.arange(len(order), dtype=np.int32), n)
    k = np.arange(int(n.sum()), dtype=np.int32) - np.repeat((np.cumsum(n) - n).astype(np.int32), n)
    py, px = np.divmod(k, wh[:, 0].astype(np.int32)[rep])
    px += lo[rep, 0].astype(np.int32)
    py += lo[rep, 1].astype(np.int32)
    t = order[rep]
    dt = np.ascontiguousarray(dist, np.float32)[t]
    fx, fy = px.astype(np.float32), py.astype(np.float32)
    e = [dt[:, i, 0] * fx + dt[:, i, 1] * fy + dt[:, i, 2] for i in range(3)]
    e = np.minimum(np.minimum(e[0], e[1]), e[2])  # (explicit: reductions over length 3 are slow)
    inside = e >= -0.5
    # a triangle that contains the pixel outranks one that only touches it
    nt = len(order)
    key = rep[inside] + 1 + np.where(e[inside] >= 0, nt, 0).astype(np.int32)
    rank = np.zeros(size * size, np.int32)
    np.maximum.at(rank, (py * size + px)[inside], key)
    pix = np.flatnonzero(rank)
    tt = order[(rank[pix] - 1) % nt]
    # per claimed pixel: barycentric coordinates in its triangle, clipped to it when well outside (a
    # pixel that a thin or folded triangle claims never samples far outside its source triangle)
    xs, ys = (pix % size).astype(np.float32), (pix // size).astype(np.float32)
    bm = np.ascontiguousarray(bary, np.float32)[tt]  # (P, 3, 3)
    w = [bm[:, i, 0] * xs + bm[:, i, 1] * ys + bm[:, i, 2] for i in range(3)]
    far = np.minimum(np.minimum(w[0], w[1]), w[2]) < -0.25
    wc = [np.maximum(wi, 0.0) for wi in w]
    total = np.maximum(wc[0] + wc[1] + wc[2], 1e-6)
    w = [np.where(far, c / total, wi) for c, wi in zip(wc, w)]
    return pix, tt, w


def inverse_map(geo_pix: np.ndarray, geo_tri: np.ndarray, geo_w: list[np.ndarray], src: np.ndarray,
                dst: np.ndarray, tris: np.ndarray, size: int = SIZE, steps: int = 5
                ) -> tuple[np.ndarray, np.ndarray]:
    """The same maps as piecewise_map(src, dst) when `src` is fixed and located once (`geo_*` =
    locate(src, src)): the forward map src -> dst is evaluated on src's own pixels, extended by the
    best similarity outside them, and inverted by Newton steps with each triangle's own Jacobian
    (about a third of piecewise_map's cost). Where it does not converge to within 0.75 px (folds of
    a turned head), -1000."""
    n = size * size
    ring = dst.astype(np.float64)
    sim = similarity(src.astype(np.float64), ring)  # src -> dst, for pixels outside the mesh
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    fx = (sim[0, 0] * xs + sim[0, 1] * ys + sim[0, 2]).astype(np.float32)
    fy = (sim[1, 0] * xs + sim[1, 1] * ys + sim[1, 2]).astype(np.float32)
    dv = ring[tris].astype(np.float32)[geo_tri]  # (P, 3, 2)
    fx.reshape(n)[geo_pix] = geo_w[0] * dv[:, 0, 0] + geo_w[1] * dv[:, 1, 0] + geo_w[2] * dv[:, 2, 0]
    fy.reshape(n)[geo_pix] = geo_w[0] * dv[:, 0, 1] + geo_w[1] * dv[:, 1, 1] + geo_w[2] * dv[:, 2, 1]
    # per triangle: the 2x2 linear part of its src -> dst affine, inverted
    sd, dd = src[tris].astype(np.float64), ring[tris]
    es = np.stack([sd[:, 1] - sd[:, 0], sd[:, 2] - sd[:, 0]], 2)  # (T, 2, 2) columns: edges
    ed = np.stack([dd[:, 1] - dd[:, 0], dd[:, 2] - dd[:, 0]], 2)
    det_d = ed[:, 0, 0] * ed[:, 1, 1] - ed[:, 0, 1] * ed[:, 1, 0]
    ok = np.abs(det_d) > 1e-9
    ed_inv = np.zeros_like(ed)
    ed_inv[ok, 0, 0], ed_inv[ok, 1, 1] = ed[ok, 1, 1] / det_d[ok], ed[ok, 0, 0] / det_d[ok]
    ed_inv[ok, 0, 1], ed_inv[ok, 1, 0] = -ed[ok, 0, 1] / det_d[ok], -ed[ok, 1, 0] / det_d[ok]
    jinv = (es @ ed_inv).astype(np.float32)  # dst -> src, (T, 2, 2)
    s_inv = cv2.invertAffineTransform(sim.astype(np.float64))
    jmap = np.empty((n, 4), np.float32)
    jmap[:] = s_inv[:, :2].reshape(4)
    jmap[geo_pix] = jinv[geo_tri].reshape(-1, 4)
    jmap = jmap.reshape(size, size, 4)
    fmap = np.dstack([fx, fy])
    # Newton: g <- g + J^-1(g) (y - F(g)), from the inverse similarity
    s_inv = s_inv.astype(np.float32)
    gx = s_inv[0, 0] * xs + s_inv[0, 1] * ys + s_inv[0, 2]
    gy = s_inv[1, 0] * xs + s_inv[1, 1] * ys + s_inv[1, 2]
    for i in range(steps + 1):
        f = cv2.remap(fmap, gx, gy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        rx, ry = xs - f[..., 0], ys - f[..., 1]
        if i == steps:
            break
        j = cv2.remap(jmap, gx, gy, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
        gx = gx + np.clip(j[..., 0] * rx + j[..., 1] * ry, -8, 8)
        gy = gy + np.clip(j[..., 2] * rx + j[..., 3] * ry, -8, 8)
    bad = rx * rx + ry * ry > 0.75 ** 2
    gx[bad] = -1000
    gy[bad] = -1000
    return gx, gy


def poly_mask(poly: np.ndarray, size: int = SIZE) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    cv2.fillPoly(m, [np.round(poly * 16).astype(np.int32)], 1, lineType=cv2.LINE_AA, shift=4)
    return m.astype(np.float32)


def skin_mask(pts: np.ndarray, size: int = SIZE) -> np.ndarray:
    """The face's skin (1) from its 468 landmarks (crop px): the face oval x SKIN_OVAL less the eyes
    with their brows and the lips."""
    m = poly_mask(oval_polygon(pts, SKIN_OVAL), size)
    for idx in (*EYE_BROWS, OUTER_LIPS):
        hull = cv2.convexHull(pts[idx].astype(np.float32)).reshape(-1, 2)
        m *= 1.0 - poly_mask(grown(hull, FEATURE_GROW), size)
    return m


def _off_skin(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Pixels of `img` inside `mask` much darker than its median there (DARK_EDGE x): hair, a
    beard, glasses, shadowed sockets."""
    lum = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
    hist = np.bincount(lum[mask > 0.5], minlength=256)
    if hist.sum() < 16:
        return np.zeros(mask.shape, bool)
    median = int(np.searchsorted(np.cumsum(hist), hist.sum() / 2))
    return lum < DARK_EDGE * median


def light_grid(crop: np.ndarray, mask: np.ndarray, n: int = GRID) -> np.ndarray:
    """n x n x 3 mean colour (0..1) of `crop` over `mask`, per cell of the crop; an empty cell takes
    the mean of its non-empty neighbours, else the overall mean. The only lighting input."""
    m = mask.astype(np.float32)
    img = crop.astype(np.float32) * (m / 255.0)[..., None]
    # INTER_AREA at an integer factor = the mean over each cell
    s = cv2.resize(img, (n, n), interpolation=cv2.INTER_AREA).astype(np.float64)
    cnt = cv2.resize(m, (n, n), interpolation=cv2.INTER_AREA).astype(np.float64)[..., None]
    full = cnt >= 0.05
    if full.all():
        return (s / cnt).astype(np.float32)
    overall = s.sum((0, 1)) / max(cnt.sum(), 1e-6)
    g = np.where(full, s / np.maximum(cnt, 1e-6), np.nan)
    for _ in range(n):
        if not np.isnan(g).any():
            break
        pad = np.pad(g, ((1, 1), (1, 1), (0, 0)), constant_values=np.nan)
        nb = np.stack([pad[:-2, 1:-1], pad[2:, 1:-1], pad[1:-1, :-2], pad[1:-1, 2:]])
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            fill = np.nanmean(nb, 0)
        g = np.where(np.isnan(g), fill, g)
    g = np.where(np.isnan(g), overall, g)
    return g.astype(np.float32)


def upsample_grid(g: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Bilinear, cell centres at cell centres, edges clamped."""
    return cv2.resize(g, (size, size), interpolation=cv2.INTER_LINEAR)


class Geometry:
    """The canonical frame of an identity bank: mean shape, triangles, identity-validity mask."""

    def __init__(self, mean_shape: np.ndarray, tris: np.ndarray, depth: np.ndarray | None = None,
                 expression: np.ndarray | None = None):
        self.mean = mean_shape.astype(np.float32)
        self.mean_ring = with_ring(self.mean)
        self.tris = tris.astype(np.int32)
        self.id_valid = poly_mask(oval_polygon(self.mean, ID_OVAL_SCALE))
        # triangles with a mesh vertex: together they cover the face oval grown past
        # ID_OVAL_SCALE (the inner helper ring lies at RING_SCALES[0]), so the rest never reaches a
        # valid identity pixel
        self.face_tris = (self.tris < len(self.mean)).any(1)
        self._located = locate(self.mean_ring, self.mean_ring, self.tris, use=self.face_tris)
        self._inner = poly_mask(oval_polygon(self.mean, INNER_BAND)) > 0.5
        self._features = poly_mask(cv2.convexHull(self.mean[FEATURES]).reshape(-1, 2)) > 0.5
        # the canonical face's depth and normals (relighting: face_shading); None: no relighting
        self.depth = None if depth is None else depth.astype(np.float32)
        self.normals = None if depth is None else normal_map(*depth_map(self.mean, self.depth, self.tris))
        # orthonormal basis of how a face moves (expression_only); None: the face's shape is drawn
        self.expression = None if expression is None or depth is None else expression.astype(np.float32)
        self._lights: dict[int, tuple] = {}  # identity_light's, by texture
        self._lights_lock = threading.Lock()  # the frame loop and the choosing worker both render

    def identity_light(self, tex: np.ndarray) -> np.ndarray | None:
        """fit_light on an identity texture (canonical, frontal) over its skin; kept per texture."""
        key = id(tex)
        with self._lights_lock:
            hit = self._lights.get(key)
        if hit is not None and hit[0] is tex:
            return hit[1]
        skin = (skin_mask(self.mean) * (self.id_valid > 0.99))[::2, ::2]
        c = fit_light(tex[::2, ::2].astype(np.float32).mean(2) / 255.0, self.normals[::2, ::2], skin)
        with self._lights_lock:
            while len(self._lights) >= 64:
                self._lights.pop(next(iter(self._lights)))
            self._lights[key] = (tex, c)
        return c

    def align(self, landmarks: np.ndarray) -> np.ndarray:
        """2x3 similarity from frame pixels to the canonical crop."""
        return similarity(landmarks.astype(np.float64), self.mean.astype(np.float64))

    def crop(self, frame: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(crop 128x128, landmarks in the crop, frame->crop affine)."""
        m = self.align(landmarks)
        c = cv2.warpAffine(frame, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return c, apply_affine(m, landmarks), m

    def to_canonical(self, crop: np.ndarray, pts: np.ndarray) -> np.ndarray:
        """Texture of a face crop (landmarks pts) in the mean shape."""
        mx, my = piecewise_map(with_ring(pts), self.mean_ring, self.tris)
        return cv2.remap(crop, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def identity_valid(self, tex: np.ndarray) -> np.ndarray:
        """Where one identity texture is skin and features, not its own hair, glasses or backdrop:
        the valid oval less the pixels around the features that are dark or off the face's skin
        colour, smoothed and eroded so no outline of the source face is pasted."""
        lab = cv2.cvtColor(tex, cv2.COLOR_BGR2LAB).astype(np.float32)
        ref = np.median(lab[self._inner], axis=0)
        off = (lab[..., 0] < DARK_EDGE * ref[0]) | (np.abs(lab[..., 1:] - ref[1:]).sum(-1) > HUE_EDGE)
        off = cv2.dilate((off & ~self._features).astype(np.uint8), np.ones((3, 3), np.uint8))
        v = (self.id_valid > 0.99).astype(np.uint8) * (1 - off)
        _, labels = cv2.connectedComponents(v)
        if labels[SIZE // 2, SIZE // 2]:
            v = (labels == labels[SIZE // 2, SIZE // 2]).astype(np.uint8)
        v = (cv2.GaussianBlur(v.astype(np.float32), (0, 0), 2.5) > 0.6).astype(np.uint8)
        return cv2.erode(v, np.ones((3, 3), np.uint8)).astype(np.float32)

    def maps(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """remap() maps from the crop (mesh pts, crop pixels) into the canonical frame; -1000 where
        no point of the canonical frame lands."""
        return inverse_map(*self._located, self.mean_ring, with_ring(pts), self.tris)

    def from_canonical(self, tex: np.ndarray, pts: np.ndarray, valid: np.ndarray | None = None,
                       maps: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A canonical texture moved onto the mesh pts (crop pixels), and its validity mask
        (`valid` in the canonical frame; the whole identity oval if None)."""
        mx, my = self.maps(pts) if maps is None else maps
        out = cv2.remap(tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        valid = cv2.remap(self.id_valid if valid is None else valid, mx, my, cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT)
        mouth = poly_mask(pts[INNER_LIPS])
        valid = valid * (1.0 - mouth)
        return out, valid


class Prepared(NamedTuple):
    """What generator_input computes on the 128 px crop, kept for a sharper rendering (render_sharp)."""
    x: np.ndarray       # the generator input, 1x11x128x128
    cover: np.ndarray   # the covered region, 128x128
    pts: np.ndarray     # the mesh the identity is warped onto (pulled toward its own shape)
    maps: tuple         # crop -> canonical remap() maps of that mesh
    gain: np.ndarray    # 128x128x3 recolouring gain
    keep: float         # colour kept (1: all; grey faces get grey identities)
    corr: np.ndarray    # BGR gain after that: the identity's mean skin colour -> the face's
    shade: np.ndarray | None = None  # 128x128 shading ratio from the mesh's normals (1: none)
    fill: np.ndarray | None = None   # 128x128x3 the smooth fill (_smooth_fill of x)
    periph: np.ndarray | None = None  # 128x128 periphery gain (periphery_gain; None: none)
    lids: np.ndarray | None = None   # the mesh before open_eyes moved its upper lids (None: not moved)


def prepare(geo: Geometry, crop: np.ndarray, pts: np.ndarray, id_tex: np.ndarray, mask_scale: float,
            id_shape: np.ndarray | None = None, pull: float = 0.0, id_valid: np.ndarray | None = None,
            openings: tuple[float, float] | None = None, sharp: bool = False) -> Prepared:
    """The generator input for one face crop (BGR uint8), and its parts (see generator_input).
    openings: each eye's opening (detect/iris.py; EYE_LIDS order): shut eyes are drawn shut.
    sharp: also the smooth fill and the periphery gain, which only render_sharp uses."""
    cover = poly_mask(oval_polygon(pts, mask_scale))
    skin = poly_mask(oval_polygon(pts, ID_OVAL_SCALE))
    grid = upsample_grid(light_grid(crop, skin))
    face_skin = skin_mask(pts)
    face_skin *= ~_off_skin(crop, face_skin)  # hair, beard, glasses on the original's skin
    face_cells = light_grid(crop, face_skin)
    face_pts = pts
    # the head's rotation against the canonical 3D face (for expression_only and face_shading)
    rot = None if geo.depth is None else head_rotation(face_pts, geo.mean, geo.depth)
    off = np.zeros_like(pts)
    if geo.expression is not None:
        # the original's own face shape is not drawn, only its pose and expression ...
        off += expression_only(geo, pts, rot) - pts
    if id_shape is not None and pull:
        # ... and the identity's own shape is
        off += np.float32(pull) * (id_shape.astype(np.float32) - geo.mean)
    if off.any():
        # the mouth's opening, width and corners stay the face's own (expression, not identity): the
        # inner lips and the corners move with the lips as a whole; the outer lip contours (their
        # thickness) take the identity's shape
        mouth = np.concatenate([UPPER_INNER, LOWER_INNER, [61, 291]])
        off[mouth] = off[np.concatenate([OUTER_LIPS, mouth])].mean(0)
        pts = pts + off
    lids = None
    if openings is not None:
        lids, pts = pts, open_eyes(pts, openings)
    maps = geo.maps(pts)
    warped, valid = geo.from_canonical(id_tex, pts, id_valid, maps)
    # relit first: the original's lighting over the identity's own, from the canonical face's
    # normals turned as the head is (4 numbers of the original, no detail of it)
    shade = None if geo.normals is None else face_shading(geo, crop, face_pts, maps, face_skin, id_tex, rot)
    if shade is not None:
        warped = np.clip(warped.astype(np.float32) * shade[..., None], 0, 255)
    id_skin = valid * skin_mask(pts)
    id_cells = light_grid(warped, id_skin)
    # per-cell gains about the overall one, limited to GAIN_SPREAD either way: a cell whose means
    # differ for other reasons (the original's dark eye sockets, brows or glasses; few valid
    # identity pixels) does not paint dark sockets or bright blotches
    whole = face_cells.mean((0, 1)) / np.maximum(id_cells.mean((0, 1)), 0.02)
    cell = np.clip(face_cells / np.maximum(id_cells, 0.02) / np.maximum(whole, 1e-3), 1 / GAIN_SPREAD, GAIN_SPREAD)
    gain = np.clip(upsample_grid((cell * whole).astype(np.float32)), 0.2, 5.0)
    tex = np.clip(warped.astype(np.float32) / 255.0 * gain, 0.0, 1.0)
    # no more colourful than the face: a grey (night IR, ORL) face gets a grey identity, not one
    # whose lips and eyes keep their colour around grey cell means (saturation, not chroma: dark
    # skin is not made grey)
    keep = min(1.0, _chroma(face_cells) / max(_chroma(id_cells), 1e-3))
    tex = _desaturate(tex, keep)
    # then the identity's skin as a whole gets the face's mean skin colour (what the cell limits,
    # clipping and desaturation left off)
    corr = _skin_match(crop, face_skin, tex, id_skin)
    tex = np.clip(tex * corr, 0.0, 1.0)
    tex *= valid[..., None]
    ctx = crop.astype(np.float32) / 255.0 * (1.0 - cover[..., None])
    x = np.ascontiguousarray(np.concatenate([tex, valid[..., None], grid, ctx, cover[..., None]], 2)
                             .transpose(2, 0, 1)[None])
    if not sharp:
        return Prepared(x, cover, pts, maps, gain, keep, corr, shade, lids=lids)
    fill = _smooth_fill(x)
    # the face's edge as dark, over its middle, as the original's (8 numbers of it): the identity's
    # skin filled out to its oval is lit flat and read as a pale egg
    soft = np.minimum(cv2.GaussianBlur(valid, (0, 0), 2.5), valid)[..., None]
    periph = periphery_gain(crop, face_pts, face_skin, soft * tex / np.maximum(valid[..., None], 1e-3)
                            + (1 - soft) * fill, pts)
    return Prepared(x, cover, pts, maps, gain, keep, corr, shade, fill, periph, lids)


def polar(poly: np.ndarray, h: int, w: int) -> tuple[np.ndarray, ...]:
    """Per pixel of an h x w image, about the centroid c of a star-shaped polygon: (dx, dy) from c,
    the distance, the polygon's own radius in that direction, and that direction (radians)."""
    c = poly.mean(0).astype(np.float64)
    d = poly.astype(np.float64) - c
    ang, rad = np.arctan2(d[:, 1], d[:, 0]), np.hypot(d[:, 0], d[:, 1])
    o = np.argsort(ang)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xs - np.float32(c[0]), ys - np.float32(c[1])
    th = np.arctan2(dy, dx)
    edge = np.interp(th, ang[o], rad[o], period=2 * np.pi).astype(np.float32)
    return dx, dy, np.sqrt(dx * dx + dy * dy), edge, th


def oval_radius(pts: np.ndarray, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(r, theta) per pixel: its distance from the face oval's centroid over the oval's own radius
    in its direction (1 on the oval), and that direction."""
    _, _, dist, edge, th = polar(oval_polygon(pts, 1.0), size, size)
    return dist / np.maximum(edge, 1e-3), th


def _sector_ratios(lum: np.ndarray, mask: np.ndarray, r: np.ndarray, th: np.ndarray, n: int
                   ) -> np.ndarray | None:
    """Per angular sector: mean `lum` over `mask` in PERIPH_BAND over its mean inside PERIPH_INNER
    (NaN for a sector with too few pixels); None without a middle."""
    inner = mask & (r < PERIPH_INNER)
    if inner.sum() < 32:
        return None
    ref = max(float(lum[inner].mean()), 1e-3)
    band = mask & (r >= PERIPH_BAND[0]) & (r < PERIPH_BAND[1])
    k = ((th + np.pi) * (n / (2 * np.pi))).astype(np.int32) % n
    sums = np.bincount(k[band], lum[band], minlength=n)
    cnt = np.bincount(k[band], minlength=n)
    return np.where(cnt >= 8, sums / np.maximum(cnt, 1) / ref, np.nan)


def periphery_gain(crop: np.ndarray, pts: np.ndarray, face_skin: np.ndarray, render: np.ndarray,
                   rpts: np.ndarray) -> np.ndarray | None:
    """A gain (128x128, about 1 in the face's middle) that takes the rendering's skin near its oval's edge
    (`render` BGR 0..1 on the mesh `rpts`), over its middle, to the original's (`crop` uint8, its
    skin `face_skin` on the mesh `pts`), sector by sector (PERIPH_SECTORS about the oval's centre,
    within PERIPH_RANGE), keeping the mean of the rendering's skin; None where either has too little
    skin."""
    n = PERIPH_SECTORS
    r0, t0 = oval_radius(pts)
    r1, t1 = oval_radius(rpts)
    lum0 = (crop[..., 0].astype(np.float32) + crop[..., 1] + crop[..., 2]) * np.float32(1 / 765)
    lum1 = (render[..., 0] + render[..., 1] + render[..., 2]) * np.float32(1 / 3)
    a = _sector_ratios(lum0, face_skin > 0.5, r0, t0, n)
    skin1 = skin_mask(rpts) > 0.5
    b = _sector_ratios(lum1, skin1, r1, t1, n)
    if a is None or b is None:
        return None
    g = np.clip(np.where(np.isfinite(a) & np.isfinite(b), a / np.where(np.isfinite(b), b, 1.0), 1.0),
                *PERIPH_RANGE)
    g = (np.roll(g, 1) + 2 * g + np.roll(g, -1)) / 4  # neighbouring sectors alike
    centres = -np.pi + (np.arange(n) + 0.5) * (2 * np.pi / n)
    gt = np.interp(t1, centres, g, period=2 * np.pi).astype(np.float32)
    gain = 1.0 + _smooth(r1, *PERIPH_FROM) * (gt - 1.0)
    # the skin's mean stays as recoloured (the edge darker, the middle a little brighter)
    w = lum1[skin1]
    return (gain * (float(w.sum()) / max(float((gain[skin1] * w).sum()), 1e-6))).astype(np.float32)


def generator_input(geo: Geometry, crop: np.ndarray, pts: np.ndarray, id_tex: np.ndarray,
                    mask_scale: float, id_shape: np.ndarray | None = None, pull: float = 0.0,
                    id_valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(input 1x11x128x128 float32, covered-region mask 128x128) for one face crop (BGR uint8).
    The original face enters only through its mesh `pts` (pulled by `pull` toward the identity's
    own shape `id_shape`, canonical frame), the 4x4 light grid over its face oval, and the crop
    outside the covered region (which is always the original face's grown oval). The identity's
    texture is recoloured cell by cell to that grid (its own 4x4 grid in the same cells -> the face's)."""
    p = prepare(geo, crop, pts, id_tex, mask_scale, id_shape, pull, id_valid)
    return p.x, p.cover


def _desaturate(tex: np.ndarray, keep: float) -> np.ndarray:
    if keep >= 1.0:
        return tex
    lum = ((tex[..., 0] + tex[..., 1] + tex[..., 2]) * np.float32(1 / 3))[..., None]  # (mean over axis 2 is slow)
    return lum + (tex - lum) * np.float32(keep)


def _chroma(cells: np.ndarray) -> float:
    """Mean saturation of the grid cells: spread of B, G, R over their mean (0 for grey)."""
    return float(np.mean(np.std(cells, axis=-1) / np.maximum(cells.mean(-1), 0.02)))


def _skin_match(crop: np.ndarray, face_skin: np.ndarray, tex: np.ndarray, id_skin: np.ndarray
                ) -> np.ndarray:
    """BGR gain taking the mean of `tex` (0..1) over `id_skin` to the mean of `crop` (uint8) over
    `face_skin` (within 0.5-2x; 1 when either has under 16 skin pixels)."""
    fw, iw = face_skin > 0.5, id_skin > 0.5
    if fw.sum() < 16 or iw.sum() < 16:
        return np.ones(3, np.float32)
    want = crop[fw].astype(np.float32).mean(0) / 255.0
    return np.clip(want / np.maximum(tex[iw].mean(0), 0.02), 0.5, 2.0).astype(np.float32)


def fill_smooth(img: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Pull-push fill: `img` where `weight` is 1, a smooth blend of the known pixels around it where
    it is 0 (a normalized image pyramid, coarse levels filling the holes of fine ones)."""
    a, b = [img * weight[..., None]], [weight.astype(np.float32)]
    while a[-1].shape[0] > 4:
        a.append(cv2.pyrDown(a[-1]))
        b.append(cv2.pyrDown(b[-1]))
    out = a[-1] / np.maximum(b[-1], 1e-6)[..., None]
    for ak, bk in zip(a[-2::-1], b[-2::-1]):
        up = cv2.pyrUp(out, dstsize=(ak.shape[1], ak.shape[0]))
        alpha = np.clip(bk * 2.0, 0.0, 1.0)[..., None]  # where half the footprint is known: its own mean
        out = alpha * (ak / np.maximum(bk, 1e-6)[..., None]) + (1 - alpha) * up
    return out


def fill_identity(tex: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """An identity texture (BGR uint8, canonical frame at any scale) with what is not its own skin
    or features (`valid` < 1, 128 px canonical: its hair, glasses rims, backdrop) filled smoothly
    from its own skin, so the whole oval can be shown without holes."""
    if valid.shape != tex.shape[:2]:
        valid = cv2.resize(valid, tex.shape[1::-1], interpolation=cv2.INTER_LINEAR)
    known = (valid > 0.99).astype(np.float32)
    out = fill_smooth(tex.astype(np.float32) * known[..., None], known)
    out = known[..., None] * tex + (1.0 - known[..., None]) * out
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _smooth_fill(x: np.ndarray) -> np.ndarray:
    """The pull-push fill of classic_render: the identity where valid, the context outside the
    covered region, smooth between them (128x128x3)."""
    x = x[0].transpose(1, 2, 0)
    tex, valid, ctx, cover = x[..., 0:3], x[..., 3:4], x[..., 7:10], x[..., 10:11]
    known = np.clip(valid + (1 - cover), 0.0, 1.0)[..., 0]
    known = (known > 0.99).astype(np.float32)
    return fill_smooth(np.ascontiguousarray(valid * tex + (1 - cover) * ctx), known)


def classic_render(x: np.ndarray) -> np.ndarray:
    """No network: the recoloured identity where valid; between its edge and the edge of the covered
    region a smooth fill from the identity's edge and the context (no detail of the original there:
    the context is what stays visible anyway); the context outside. x: generator_input. Returns
    128x128x3 float in 0..1 (BGR)."""
    fill = _smooth_fill(x)
    x = x[0].transpose(1, 2, 0)
    tex, valid, ctx, cover = x[..., 0:3], x[..., 3:4], x[..., 7:10], x[..., 10:11]
    # the identity fades into the fill over a few pixels inside its edge (no drawn outline: tex is
    # premultiplied by valid, so its edge pixels are divided back to their own colour)
    soft = np.minimum(cv2.GaussianBlur(valid[..., 0], (0, 0), 2.5), valid[..., 0])[..., None]
    inner = soft * (tex / np.maximum(valid, 1e-3)) + (1 - soft) * fill
    return cover * inner + (1 - cover) * ctx


def _smooth(x: np.ndarray, a: float, b: float) -> np.ndarray:
    """0 below a, 1 above b, smooth between."""
    t = np.clip((x - a) / np.maximum(b - a, 1e-6), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def draw_mouth(img: np.ndarray, lips: np.ndarray, s: float, keep: float = 1.0) -> np.ndarray:
    """An open mouth's interior drawn into the rendering `img` (BGR float 0..1) inside the inner-lip
    polygon `lips` (img px): teeth under the upper lip whose edge follows the lip's curve (a smile's
    teeth curve with it), lower teeth and a tongue when the mouth opens wide, a cavity between them;
    teeth lit as the skin around the mouth and shaded toward the corners and under the lip, the
    cavity in the lips' own hue; soft edges. From the geometry and the rendering only (the skin and
    lips around the mouth as rendered), `keep` its colour (grey faces get a grey mouth)."""
    top, bot = float(lips[:, 1].min()), float(lips[:, 1].max())
    if bot - top < MOUTH_OPEN * s:
        return img
    # work on the mouth's neighbourhood only
    pad = int(np.ceil(6 * s)) + 4
    h, w = img.shape[:2]
    px0, py0 = max(0, int(lips[:, 0].min()) - pad), max(0, int(top) - pad)
    px1, py1 = min(w, int(lips[:, 0].max()) + pad + 1), min(h, int(bot) + pad + 1)
    if px1 - px0 < 4 or py1 - py0 < 4:
        return img
    out = img.copy()
    out[py0:py1, px0:px1] = _draw_mouth(np.ascontiguousarray(img[py0:py1, px0:px1]),
                                        lips - np.float32([px0, py0]), s, keep)
    return out


def _draw_mouth(img: np.ndarray, lips: np.ndarray, s: float, keep: float) -> np.ndarray:
    top, bot = float(lips[:, 1].min()), float(lips[:, 1].max())
    h, w = img.shape[:2]
    mouth = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mouth, [np.round(lips * 16).astype(np.int32)], 1, lineType=cv2.LINE_AA, shift=4)
    mouth = mouth.astype(np.float32)
    ring = cv2.dilate(mouth, np.ones((3, 3), np.uint8), iterations=max(1, int(round(2 * s)))) - mouth
    lip = img[ring > 0.5].mean(0) if (ring > 0.5).any() else img[mouth > 0.5].mean(0)
    far = cv2.dilate(mouth, np.ones((3, 3), np.uint8), iterations=max(2, int(round(5 * s)))) - mouth
    skin = float(np.median(img[far > 0.5].mean(1))) if (far > 0.5).any() else float(lip.mean())
    x0, x1 = max(0, int(np.floor(lips[:, 0].min())) - 2), min(w, int(np.ceil(lips[:, 0].max())) + 3)
    y0, y1 = max(0, int(np.floor(top)) - 2), min(h, int(np.ceil(bot)) + 3)
    m = mouth[y0:y1, x0:x1] > 0.5
    cols = m.any(0)
    if not cols.any():
        return img
    # per column: where the mouth's opening starts and ends (it follows the lips' curve)
    rows = np.arange(y1 - y0, dtype=np.float32)[:, None]
    up = np.where(cols, m.argmax(0), 0).astype(np.float32)
    dn = np.where(cols, (y1 - y0 - 1) - m[::-1].argmax(0), 0).astype(np.float32)
    xs = np.flatnonzero(cols)
    width = float(xs[-1] - xs[0] + 1)
    u = (np.arange(x1 - x0, dtype=np.float32) - (xs[0] + xs[-1]) / 2) / max(width / 2, 1.0)
    opening = np.maximum(dn - up, 1.0)
    gap = float((dn - up + 1)[cols].max())  # the widest opening between the lips (not the curve's height)
    if gap < MOUTH_OPEN * s:
        return img
    wide = gap / max(width, 1.0)  # over the mouth's width
    # upper teeth: a band under the upper lip, at most a fifth of the mouth's width deep
    # (none in lips only just parted: a dark gap there, as in a face at rest)
    teeth_h = np.minimum(TEETH_FILL * opening, 0.2 * width) * _smooth(np.float32(wide), TEETH_FROM, 2 * TEETH_FROM)
    depth = rows - up
    upper = 1.0 - _smooth(depth, teeth_h - 0.6 * s, teeth_h + 0.6 * s)
    # lower teeth and tongue only when the mouth is open wide
    low_h = np.minimum(0.22 * opening, 0.08 * width) * _smooth(np.float32(wide), 0.25, 0.4)
    lower = _smooth(rows - (dn - low_h), -0.6 * s, 0.6 * s) * (low_h > 0.5 * s)
    tongue = _smooth((rows - up) / opening, 0.55, 0.85) * _smooth(np.float32(wide), 0.3, 0.5)
    # teeth: lit as the skin, a little brighter, warm white; darker toward the corners, in the shadow
    # of the upper lip, and between the teeth (faint gaps, the incisors widest)
    bright = float(np.clip(skin * TEETH_BRIGHT[0] + TEETH_BRIGHT[1], 0.25, TEETH_BRIGHT[2]))
    shade = (1.0 - 0.55 * u ** 2)[None, :] * (0.7 + 0.3 * _smooth(depth, 0.0, 0.35 * teeth_h + s))
    gaps = np.float32([0.0, 0.22, -0.22, 0.4, -0.4, 0.56, -0.56])
    d = np.abs(u[:, None] - gaps[None, :]).min(1) * width / 2
    shade = shade * (1.0 - TEETH_GAP * np.exp(-(d / (0.7 * s)) ** 2))[None, :]
    tooth = np.float32([0.9, 0.96, 1.0]) * bright
    tooth = _desaturate(tooth[None, None, :], keep)[0, 0]
    cavity = lip * np.float32(MOUTH_DARK) * (1.0 - 0.45 * u ** 2)[None, :, None]
    tongue_c = lip * np.float32(0.6) * (1.0 - 0.3 * u ** 2)[None, :, None]
    inside = cavity * (1 - tongue[..., None]) + tongue_c * tongue[..., None]
    t_up = shade[..., None] * tooth
    inside = upper[..., None] * t_up + (1 - upper[..., None]) * inside
    t_lo = np.float32(0.75) * shade[..., None] * tooth
    inside = lower[..., None] * t_lo + (1 - lower[..., None]) * inside
    soft = cv2.GaussianBlur(mouth, (0, 0), 0.6 * s)[y0:y1, x0:x1, None]
    out = img.copy()
    out[y0:y1, x0:x1] = soft * inside + (1 - soft) * img[y0:y1, x0:x1]
    return out.astype(np.float32)


def _window(shape: tuple, lo: np.ndarray, hi: np.ndarray, pad: int) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1): the box lo..hi grown by pad px, inside an image of `shape`; None if under 4 px."""
    x0, y0 = max(0, int(lo[0]) - pad), max(0, int(lo[1]) - pad)
    x1, y1 = min(shape[1], int(hi[0]) + pad + 1), min(shape[0], int(hi[1]) + pad + 1)
    return None if x1 - x0 < 4 or y1 - y0 < 4 else (x0, y0, x1, y1)


def _fill_at(poly: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """uint8 mask of the box's size, 1 inside the polygon `poly` (image px; anti-aliased, 1/16 px)."""
    x0, y0, x1, y1 = box
    m = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(m, [np.round((poly - np.float32([x0, y0])) * 16).astype(np.int32)], 1, lineType=cv2.LINE_AA,
                 shift=4)
    return m


def draw_lips(img: np.ndarray, pts: np.ndarray, s: float, keep: float = 1.0) -> np.ndarray:
    """Lips drawn along the mesh's lip contours (`pts`: the 468 points in img px): the rendering under
    them smoothed, no brighter than the skin around them, darkened and reddened (upper lip in shadow,
    lower lip lit), the line between closed lips and
    the mouth's corners marked, so their shape (a smile's lifted corners) reads. From the geometry
    and the rendering only; `keep` its colour."""
    lo, hi = pts[OUTER_LIPS].min(0), pts[OUTER_LIPS].max(0)
    box = _window(img.shape, lo, hi, int(np.ceil(0.3 * (hi[0] - lo[0]) + 3 * s)))
    if box is None:
        return img
    x0, y0, x1, y1 = box
    off = np.float32([x0, y0])
    upper = _fill_at(np.concatenate([pts[UPPER_OUTER], pts[UPPER_INNER[::-1]]]), box).astype(np.float32)
    lower = _fill_at(np.concatenate([pts[LOWER_OUTER], pts[LOWER_INNER[::-1]]]), box).astype(np.float32)
    sig = max(0.5, 0.6 * s)
    upper, lower = cv2.GaussianBlur(upper, (0, 0), sig), cv2.GaussianBlur(lower, (0, 0), sig)
    # the lower lip lit toward its middle (a soft highlight), the upper lip a little darker
    c = pts[LOWER_OUTER].mean(0) * 0.5 + pts[LOWER_INNER].mean(0) * 0.5 - off
    wl = max(float(np.linalg.norm(pts[291] - pts[61])), 1.0)
    ys, xs = np.mgrid[0:y1 - y0, 0:x1 - x0].astype(np.float32)
    hl = np.exp(-(((xs - c[0]) / (0.22 * wl)) ** 2 + ((ys - c[1]) / (0.07 * wl + s)) ** 2))
    tint = _desaturate(LIP_TINT[None, None, :], keep)[0, 0]
    patch = img[y0:y1, x0:x1]
    # under the lips: the rendering smoothed and no brighter than the skin around them (the identity's
    # own mouth, a closed one in its picture, can hold bright specks that would read as teeth)
    around = (cv2.dilate(upper + lower, np.ones((3, 3), np.uint8), iterations=max(2, int(round(3 * s))))
              - (upper + lower)) > 0.5
    skin = np.median(patch[around], 0) if around.any() else patch.reshape(-1, 3).mean(0)
    base = np.minimum(cv2.GaussianBlur(patch, (0, 0), max(0.7, 0.03 * wl)), skin)
    lips = base * tint * (1.0 - 0.12 * upper[..., None] + 0.12 * hl[..., None] * lower[..., None])
    a = np.clip(upper + lower, 0, 1)[..., None] * np.float32(LIP_ALPHA)
    out = img.copy()
    patch = a * lips + (1 - a) * patch
    # the line between the lips and the corners: darker along the mouth's slit, carried a little past
    # each corner (a smile's corners lift with the mesh)
    slit = (pts[UPPER_INNER] + pts[LOWER_INNER]) / 2
    def past(corner, inner):  # a point just past a corner, away from the inner lips' corner
        d = pts[corner] - pts[inner]
        return pts[corner] + CORNER_PAST * wl * d / max(float(np.linalg.norm(d)), 1e-3)
    ext, ext2 = [past(61, 78)], [past(291, 308)]
    line = np.concatenate([ext, pts[[61]], slit, pts[[291]], ext2]) - off
    lm = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.polylines(lm, [np.round(line * 16).astype(np.int32)], False, 255, max(1, int(round(0.8 * s))),
                  lineType=cv2.LINE_AA, shift=4)
    lm = cv2.GaussianBlur(lm.astype(np.float32) / 255.0, (0, 0), max(0.5, 0.5 * s))
    lm = lm / max(float(lm.max()), 1e-6)
    patch = patch * (1.0 - SLIT_DARK * lm[..., None])
    out[y0:y1, x0:x1] = patch
    return out.astype(np.float32)


def _eye_frame(upper: np.ndarray, lower: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(outer corner, unit axis toward the inner corner, unit normal toward the brow, width)."""
    outer, inner = upper[0], upper[-1]
    w = max(float(np.linalg.norm(inner - outer)), 1e-3)
    ax = (inner - outer) / w
    up = np.float32([ax[1], -ax[0]])
    if float(up[1]) > 0:
        up = -up
    return outer, ax, up, w


def open_eyes(pts: np.ndarray, openings: tuple[float, float]) -> np.ndarray:
    """The mesh `pts` (468 points) with the upper lid of each eye the original has shut or nearly
    (its opening, the widest gap between the lids over the eye's width, under EYE_SHUT[1]) lowered
    onto its lower lid (all the way under EYE_SHUT[0], partly between); an eye open wider stays as
    the mesh draws it; the corners and the lower lids never move."""
    out = pts.copy()
    for (up_i, lo_i), opening in zip(EYE_LIDS, openings):
        upper, lower = pts[up_i], pts[lo_i]
        o, ax, up, w = _eye_frame(upper, lower)
        tu, hu = (upper - o) @ ax, (upper - o) @ up
        tl, hl = (lower - o) @ ax, (lower - o) @ up
        k = np.argsort(tl)
        gap = hu - np.interp(tu, tl[k], hl[k])
        scale = float(_smooth(np.float32(opening), *EYE_SHUT))
        inner = np.arange(1, len(up_i) - 1)  # not the corners
        out[up_i[inner]] = pts[up_i[inner]] - np.outer(gap[inner] * (1.0 - scale), up)
    return out


def draw_eyes(img: np.ndarray, pts: np.ndarray, s: float, keep: float = 1.0,
              iris: np.ndarray = IRIS_COLOURS[0], before: np.ndarray | None = None) -> np.ndarray:
    """Both eyes drawn into the rendering `img` (BGR float 0..1) inside the openings of the mesh
    `pts` (the 468 points in img px): sclera lit as the skin around the eye, shaded toward the
    corners and under the upper lid; an iris of colour `iris` (BGR, at skin brightness 0.6) with a
    darker rim, faint radial streaks and a pupil, resting on the lower lid and cut by the upper one,
    both eyes looking the same way; one catchlight on the same side in both; a dark line along the
    upper lid. A closed eye gets only the line. `before`: the mesh before open_eyes lowered its
    upper lids; what the identity showed between a lid as it was and as it is (its own eye) is
    covered by eyelid skin. From the geometry and the rendering only (the identity's own eyes,
    brightened with its skin by the recolouring, read pale and staring)."""
    out = img
    for upper, lower in EYE_LIDS:
        if before is not None:
            out = _lower_lid(out, before[upper], pts[upper], pts[lower], s)
        out = _draw_eye(out, pts[upper], pts[lower], s, keep, iris)
    return out


def _lower_lid(img: np.ndarray, was: np.ndarray, upper: np.ndarray, lower: np.ndarray, s: float
               ) -> np.ndarray:
    """Eyelid skin between an upper lid as it `was` and where it is now (lowered toward the lower
    lid): the skin around the eye's former opening, a little darker, with the rendering's fine grain."""
    _, ax, up, w = _eye_frame(was, lower)
    drop = float(np.max((was - upper) @ up))
    if w < 4.0 or drop < 0.03 * w:
        return img
    box = _window(img.shape, np.minimum(was.min(0), lower.min(0)), np.maximum(was.max(0), lower.max(0)),
                  int(np.ceil(0.3 * w + 2 * s)) + 2)
    if box is None:
        return img
    x0, y0, x1, y1 = box
    opening = _fill_at(np.concatenate([was, lower[::-1]]), box)  # the identity's eye, as it was open
    lid = _fill_at(np.concatenate([was, upper[::-1]]), box)
    patch = img[y0:y1, x0:x1]
    ring = (cv2.dilate(opening, np.ones((3, 3), np.uint8), iterations=max(2, int(round(0.15 * w))))
            - opening) > 0
    skin = np.median(patch[ring], 0) if ring.any() else patch.reshape(-1, 3).mean(0)
    grain = patch - cv2.GaussianBlur(patch, (0, 0), max(0.7, 0.6 * s))
    cover = np.float32(EYELID_DARK) * skin + np.clip(grain, -0.03, 0.03)
    a = cv2.GaussianBlur(lid.astype(np.float32), (0, 0), max(0.5, 0.5 * s))[..., None]
    out = img.copy()
    out[y0:y1, x0:x1] = a * cover + (1 - a) * patch
    return out.astype(np.float32)


def _draw_eye(img: np.ndarray, upper: np.ndarray, lower: np.ndarray, s: float, keep: float,
              iris: np.ndarray) -> np.ndarray:
    _, ax, up, w = _eye_frame(upper, lower)  # up: toward the brow (image y grows downward)
    if w < 4.0:
        return img
    h, wd = img.shape[:2]
    lo, hi = np.minimum(upper.min(0), lower.min(0)), np.maximum(upper.max(0), lower.max(0))
    pad = int(np.ceil(0.25 * w + 2 * s)) + 2
    x0, y0 = max(0, int(lo[0]) - pad), max(0, int(lo[1]) - pad)
    x1, y1 = min(wd, int(hi[0]) + pad + 1), min(h, int(hi[1]) + pad + 1)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return img
    off = np.float32([x0, y0])
    U, L = upper - off, lower - off
    ys, xs = np.mgrid[0:y1 - y0, 0:x1 - x0].astype(np.float32)
    patch = img[y0:y1, x0:x1]
    # the skin around the eye (its brightness lights the drawing)
    opening = np.zeros(xs.shape, np.uint8)
    cv2.fillPoly(opening, [np.round(np.concatenate([U, L[::-1]]) * 16).astype(np.int32)], 1,
                 lineType=cv2.LINE_AA, shift=4)
    around = (cv2.dilate(opening, np.ones((3, 3), np.uint8), iterations=max(2, int(round(0.12 * w))))
              - opening) > 0
    skin = np.median(patch[around], 0) if around.any() else patch.reshape(-1, 3).mean(0)
    lum = float(np.clip(skin.mean(), 0.05, 1.0))
    out = img.copy()
    # lid line: dark along the upper lid (lashes), faint along the lower one
    line = np.zeros(xs.shape, np.float32)
    cv2.polylines(line, [np.round(U * 16).astype(np.int32)], False, 1.0, max(1, int(round(0.05 * w))),
                  lineType=cv2.LINE_AA, shift=4)
    low = np.zeros(xs.shape, np.float32)
    cv2.polylines(low, [np.round(L * 16).astype(np.int32)], False, 1.0, max(1, int(round(0.025 * w))),
                  lineType=cv2.LINE_AA, shift=4)
    line = cv2.GaussianBlur(line, (0, 0), max(0.4, 0.4 * s))
    low = cv2.GaussianBlur(low, (0, 0), max(0.4, 0.4 * s))
    # opening height at the middle, across the axis
    mid_u, mid_l = U[len(U) // 2], L[len(L) // 2]
    gap = float(np.dot(mid_u - mid_l, up))
    patch = patch * (1.0 - 0.55 * line[..., None]) * (1.0 - 0.2 * low[..., None])
    if gap < 0.1 * w:  # closed or blinking
        out[y0:y1, x0:x1] = patch
        return out.astype(np.float32)
    mask = cv2.GaussianBlur(opening.astype(np.float32), (0, 0), max(0.4, 0.35 * s))
    # position along the axis (-1 outer corner .. 1 inner) and depth under the upper lid
    c = (U[0] + U[-1]) / 2
    u = ((xs - c[0]) * ax[0] + (ys - c[1]) * ax[1]) / (w / 2)
    top = np.interp(u, ((U - c) @ ax) / (w / 2), (U - c) @ up).astype(np.float32)
    depth = top - ((xs - c[0]) * up[0] + (ys - c[1]) * up[1])  # px below the upper lid
    lid = 0.6 + 0.4 * _smooth(depth, 0.0, 0.3 * gap)
    bright = float(np.clip(lum * 1.05 + 0.08, 0.2, 0.9))
    # the light's colour, as the skin shows it, tints sclera and iris alike
    cast = np.clip(skin / max(float(skin.mean()), 1e-3), 0.6, 1.6).astype(np.float32)
    sclera = _desaturate((np.float32([0.88, 0.91, 0.94]) * cast ** 0.6)[None, None, :], keep)[0, 0] * bright
    eye = sclera * ((1.0 - 0.35 * np.clip(u, -1, 1) ** 2) * lid)[..., None]
    # the iris rests on the lower lid at the opening's middle and the upper lid cuts it; in a wide
    # opening it is a little larger and rises to stay under the upper lid (no white above it: a stare)
    r = float(np.clip(0.42 * gap, 0.2 * w, 0.23 * w))
    ic = mid_l + up * np.float32(max(0.92 * r, gap - 0.85 * r)) + ax * np.float32(0.04 * w)
    dx, dy = xs - ic[0], ys - ic[1]
    rr = np.sqrt(dx * dx + dy * dy) / r
    ang = np.arctan2(dy, dx)
    col = _desaturate((np.asarray(iris, np.float32) * cast)[None, None, :], keep)[0, 0] * np.float32(lum / 0.6)
    streak = 1.0 + 0.12 * np.sin(ang * 23.0) * np.sin(ang * 7.0 + 1.3) * _smooth(rr, 0.4, 0.6)
    shade = (1.0 - 0.45 * _smooth(rr, 0.75, 1.0)) * streak * lid
    iris_img = col * shade[..., None]
    pupil = _smooth(rr, 0.26, 0.32)[..., None]
    iris_img = iris_img * pupil + np.float32(0.02 * lum / 0.6) * (1.0 - pupil)
    inside = 1.0 - _smooth(rr, 0.97, 1.03)
    eye = inside[..., None] * iris_img + (1.0 - inside[..., None]) * eye
    # a catchlight up and to the image's left, the same in both eyes
    g = np.exp(-(((xs - (ic[0] - 0.3 * r)) ** 2 + (ys - (ic[1] - 0.3 * r)) ** 2) / (0.09 * r) ** 2))
    eye = eye + (g * 0.8 * bright * _smooth(depth, 0.0, 0.15 * gap))[..., None]
    patch = mask[..., None] * np.minimum(eye, 1.0) + (1.0 - mask[..., None]) * patch
    out[y0:y1, x0:x1] = patch
    return out.astype(np.float32)


def _magnify(img: np.ndarray, s: float, size: int, interp: int = cv2.INTER_LINEAR) -> np.ndarray:
    """A 128 px crop-frame image at s x its resolution (pixel p -> s p, as the scaled alignment)."""
    m = np.float32([[s, 0, 0], [0, s, 0]])
    return cv2.warpAffine(img, m, (size, size), flags=interp, borderMode=cv2.BORDER_REPLICATE)


def render_sharp(geo: Geometry, p: Prepared, ctx: np.ndarray, pts: np.ndarray, mask_scale: float,
                 tex: np.ndarray, tex_scale: int, valid: np.ndarray, s: float,
                 ring: tuple[np.ndarray, np.ndarray] | None = None, iris: np.ndarray = IRIS_COLOURS[0]
                 ) -> np.ndarray:
    """classic_render at s x the crop's resolution: the identity sampled from its sharp texture
    (`tex`, canonical frame at tex_scale x 128 px) straight into the magnified crop, so a large face
    is not magnified from 128 px; the smooth fill and the recolouring gain, which hold no detail,
    come magnified from the 128 px crop. ctx: the frame aligned at s x (BGR uint8); pts: the face's
    mesh in the 128 px crop; valid: the identity's validity (canonical, 128 px); ring: (the frame
    outside the covered region, BGR float 0..1 premultiplied, and where it is known), aligned as ctx,
    for ring_fill; iris: the drawn eyes' iris colour (draw_eyes; lips and mouth are drawn too).
    Returns BGR float 0..1 of ctx's size."""
    size = ctx.shape[0]
    fill = _magnify(_smooth_fill(p.x) if p.fill is None else p.fill, s, size)
    mx, my = p.maps
    inside = (mx > -999).astype(np.float32)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / np.float32(s)
    hx = cv2.remap(mx, xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    hy = cv2.remap(my, xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    bad = cv2.remap(inside, xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT) < 0.999
    hx[bad], hy[bad] = -1000, -1000
    k = np.float32(tex_scale)
    warped = cv2.remap(tex, hx * k, hy * k, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    v = cv2.remap(valid, hx, hy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    v *= 1.0 - poly_mask(p.pts[INNER_LIPS] * np.float32(s), size)
    gain = _magnify(p.gain, s, size)
    if p.shade is not None:
        gain = gain * _magnify(p.shade, s, size)[..., None]
    face = _desaturate(np.clip(warped.astype(np.float32) / 255.0 * gain, 0.0, 1.0), p.keep)
    face = np.clip(face * p.corr, 0.0, 1.0)
    soft = np.minimum(cv2.GaussianBlur(v, (0, 0), 2.5 * s), v)[..., None]
    mesh = p.pts * np.float32(s)
    inner = soft * face + (1 - soft) * fill
    if p.periph is not None:
        inner *= _magnify(p.periph, s, size)[..., None]
    inner = draw_lips(inner, mesh, s, p.keep)
    inner = draw_mouth(inner, mesh[INNER_LIPS], s, p.keep)
    inner = draw_eyes(inner, mesh, s, p.keep, iris, None if p.lids is None else p.lids * np.float32(s))
    poly = oval_polygon(pts * np.float32(s), mask_scale)
    cover = poly_mask(poly, size)[..., None]
    bg = ctx.astype(np.float32) / 255.0
    if ring is not None:
        # the ring between the identity's face and the covered edge: the surroundings reflected in,
        # joined to the face band by band
        zone = np.maximum(poly_mask(oval_polygon(p.pts * np.float32(s), FACE_ZONE), size), soft[..., 0])
        zone = cv2.GaussianBlur(zone, (0, 0), ZONE_SOFT * s)
        # the ring's own colours, not the face's: low-passed, normalized over what is outside the zone
        low = lowpass_over(bg, (zone < 0.5).astype(np.float32), RING_LOW * s)
        inner = blend_bands(inner, ring_fill(ring[0], ring[1], poly, low, s), zone, levels=3)
    return cover * inner + (1 - cover) * bg


def mirror_ring(img: np.ndarray, poly: np.ndarray, margin: float = 1.0, squeeze: float = 1.0) -> np.ndarray:
    """`img` reflected inward across the polygon `poly` (star-shaped about its centroid): a pixel at
    radius r where the polygon's edge is at R takes the pixel at radius R + squeeze (R - r) + margin
    on the same ray (never closer than R + margin; squeeze 1 is a plain reflection), so hair, skin
    and background keep their own texture into the ring inside the edge. Reads `img` only outside
    the polygon."""
    h, w = img.shape[:2]
    c = poly.mean(0).astype(np.float64)
    dx, dy, r, edge, _ = polar(poly, h, w)
    r += np.float32(1e-3)
    f = (np.maximum(edge + (edge - r) * np.float32(squeeze), edge) + np.float32(margin)) / r
    return cv2.remap(img, np.float32(c[0]) + dx * f, np.float32(c[1]) + dy * f, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT)


def lowpass(img: np.ndarray, sigma: float) -> np.ndarray:
    """`img` Gaussian-blurred by `sigma` px, at 1/d of its resolution (sigma / d >= 3 px) and scaled up."""
    h, w = img.shape[:2]
    d = max(1, int(sigma // 3))
    small = cv2.resize(img, (max(1, w // d), max(1, h // d)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / d, borderType=cv2.BORDER_REPLICATE)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def lowpass_over(img: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """`img` (HxWx3) low-passed over where `weight` (HxW) is 1 only: a normalized lowpass."""
    lo = lowpass(np.dstack([img * weight[..., None], weight]), sigma)
    return lo[..., :3] / np.maximum(lo[..., 3:], 1e-3)


def ring_fill(src: np.ndarray, known: np.ndarray, poly: np.ndarray, low: np.ndarray, s: float = 1.0
              ) -> np.ndarray:
    """The covered ring's background: the surroundings (`src`, BGR float premultiplied by `known`,
    0 under the cover) reflected in across the covered polygon, on the top and sides, where the
    reflection's colours are the ring's own (`low`: the ring's colours, low-passed; s: px per crop
    px); where they depart from them (RING_DEPART) and below the chin (within MIRROR_DOWN of straight
    down, where a reflection would pull the collar up to the jaw), crossing over along the angle, the
    ring's own colours with the reflection's fine grain only. Where the reflection would read unknown
    pixels (the cover again, past the frame's edge) the known reflected pixels around them, low-passed."""
    h, w = known.shape[:2]
    m = mirror_ring(np.dstack([src, known]), poly, squeeze=MIRROR_SQUEEZE)
    k = m[..., 3]
    sure = (k > 0.99).astype(np.float32)
    mir = m[..., :3] / np.maximum(k, 1e-3)[..., None]
    c = poly.mean(0)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    down = np.degrees(np.arctan2(np.abs(xs - c[0]), ys - c[1]))  # 0 straight down, 180 up
    wgt = np.clip((down - MIRROR_DOWN[0]) / (MIRROR_DOWN[1] - MIRROR_DOWN[0]), 0, 1)[..., None]
    # how far the reflected pixel is known: partly known ones (the covered edge's first pixels,
    # whose neighbours are under the cover) are averages of their known neighbours, so kept
    soft = np.clip((k - 0.2) / 0.6, 0.0, 1.0)[..., None]
    base = lowpass_over(mir, sure, RING_TEX * s)
    # the ring's own colours, turning into the reflection's toward the covered edge (no colour step
    # there: a neck's colour against a shirt's)
    edge = np.clip(2.0 * (1.0 - lowpass(poly_mask(poly, h), RING_EDGE * s)), 0, 1)[..., None]
    own = low + edge * (base - low)
    # the reflection as it is where its colours are the ring's own; where they are not (a bright
    # backdrop over ears and hair, blinds over a forehead) the ring's own colours with only the
    # reflection's fine grain (no drawn edge of a hat brim or a window)
    d = np.abs(base - own)
    d = np.maximum(np.maximum(d[..., 0], d[..., 1]), d[..., 2])  # (a reduction over axis 2 is slow)
    a = np.clip((d - RING_DEPART[0]) * np.float32(1 / (RING_DEPART[1] - RING_DEPART[0])), 0, 1)[..., None]
    fine = np.clip(mir - cv2.GaussianBlur(mir, (0, 0), RING_GRAIN * s), -RING_GRAIN_MAX, RING_GRAIN_MAX)
    fine *= soft
    # wgt (1 - a) of the reflection as it is, the rest the ring's own colours with the fine grain
    keep = wgt * (1 - a)
    out = own + fine * (wgt * a + (1 - wgt) * edge)
    out += keep * (base - own + (mir - base) * soft)
    return out


def blend_bands(a: np.ndarray, b: np.ndarray, mask: np.ndarray, levels: int = 5) -> np.ndarray:
    """Multi-band (Laplacian pyramid) blend: `a` where mask is 1, `b` where 0; coarse bands cross
    over wide, fine bands over narrow transitions (no soft band of lost detail, no hard edge)."""
    ga, gb, gm = [a.astype(np.float32)], [b.astype(np.float32)], [mask.astype(np.float32)]
    for _ in range(levels):
        if min(ga[-1].shape[:2]) < 8:
            break
        ga.append(cv2.pyrDown(ga[-1]))
        gb.append(cv2.pyrDown(gb[-1]))
        gm.append(cv2.pyrDown(gm[-1]))
    m = gm[-1][..., None] if a.ndim == 3 else gm[-1]
    out = ga[-1] * m + gb[-1] * (1 - m)
    for k in range(len(ga) - 2, -1, -1):
        size = (ga[k].shape[1], ga[k].shape[0])
        la = ga[k] - cv2.pyrUp(ga[k + 1], dstsize=size)
        lb = gb[k] - cv2.pyrUp(gb[k + 1], dstsize=size)
        m = gm[k][..., None] if a.ndim == 3 else gm[k]
        out = cv2.pyrUp(out, dstsize=size) + la * m + lb * (1 - m)
    return out


# lighting from the mesh ---------------------------------------------------------------------------

def depth_map(mean: np.ndarray, depth: np.ndarray, tris: np.ndarray, size: int = SIZE
              ) -> tuple[np.ndarray, np.ndarray]:
    """The canonical face's depth (crop px, negative toward the camera), linear over the mesh's
    triangles (rasterized by `locate`), and where the mesh covers the canonical frame."""
    use = (tris < len(depth)).all(1)
    ring = with_ring(mean)
    pix, tri, w = locate(ring, ring, tris, size, use=use)
    v = tris[tri]
    z = np.zeros(size * size, np.float32)
    known = np.zeros(size * size, np.float32)
    z[pix] = w[0] * depth[v[:, 0]] + w[1] * depth[v[:, 1]] + w[2] * depth[v[:, 2]]
    known[pix] = 1.0
    return z.reshape(size, size), known.reshape(size, size)


def normal_map(z: np.ndarray, w: np.ndarray, sigma: float = NORMAL_SOFT) -> np.ndarray:
    """Unit surface normals of the depth map (x right, y down, z away from the camera; facing the
    camera: nz < 0) where it is known (w), carried smoothly past its edge."""
    k = (cv2.erode(w, np.ones((5, 5), np.uint8)) > 0.5).astype(np.float32)
    zs = cv2.GaussianBlur(z * k, (0, 0), sigma) / np.maximum(cv2.GaussianBlur(k, (0, 0), sigma), 1e-3)
    gx = cv2.Sobel(zs, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(zs, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    n = np.dstack([gx, gy, -np.ones_like(zs)])
    n /= np.linalg.norm(n, axis=2, keepdims=True)
    k2 = (cv2.erode(k, np.ones((5, 5), np.uint8)) > 0.5).astype(np.float32)
    n = fill_smooth(n * k2[..., None], k2) * (1 - k2[..., None]) + n * k2[..., None]
    return n / np.maximum(np.linalg.norm(n, axis=2, keepdims=True), 1e-6)


def head_rotation(pts: np.ndarray, mean: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """3x3 rotation of the canonical face seen as `pts` (crop px): a scaled-orthographic fit."""
    p3 = np.c_[mean, depth, np.ones(len(depth))].astype(np.float64)
    a, *_ = np.linalg.lstsq(p3, pts[:len(depth)].astype(np.float64), rcond=None)
    r1 = a[:3, 0] / np.linalg.norm(a[:3, 0])
    r2 = a[:3, 1] - r1 * (r1 @ a[:3, 1])
    r2 /= np.linalg.norm(r2)
    return np.stack([r1, r2, np.cross(r1, r2)]).astype(np.float32)


def fit_light(lum: np.ndarray, normals: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """Lambert-like lighting (c0 + c . n) fitted to the luminance over the mask (robust, 2 rounds
    of trimming); None with too few pixels."""
    sel = mask > 0.5
    if sel.sum() < 64:
        return None
    a = np.c_[np.ones(int(sel.sum())), normals[sel]].astype(np.float64)
    y = lum[sel].astype(np.float64)
    keep = np.ones(len(y), bool)
    for _ in range(3):
        c, *_ = np.linalg.lstsq(a[keep], y[keep], rcond=None)
        r = y - a @ c
        keep = np.abs(r) < 2.5 * max(np.std(r[keep]), 1e-4)
    return c.astype(np.float32)


def shading(c: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """The fitted lighting (fit_light) at each normal."""
    return c[0] + normals @ c[1:]


def face_shading(geo: Geometry, crop: np.ndarray, pts: np.ndarray, maps: tuple, face_skin: np.ndarray,
                 id_tex: np.ndarray, rot: np.ndarray | None = None) -> np.ndarray | None:
    """Relighting: the original's lighting (4 numbers fitted over its skin against the canonical
    face's normals, turned as the head is) over the identity's own (fitted the same way on its
    canonical texture, frontal): a shading ratio about 1 on the mesh (128x128), or None. rot: the
    head's rotation (head_rotation of pts) when already known."""
    mx, my = maps
    inside = mx > -999
    nc = cv2.remap(geo.normals, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if rot is None:
        rot = head_rotation(pts, geo.mean, geo.depth)
    n = nc @ rot.T
    n /= np.maximum(np.linalg.norm(n, axis=2, keepdims=True), 1e-6)
    # fitted on every second pixel each way (4 numbers need no more)
    lum = crop[::2, ::2].astype(np.float32).mean(2) / 255.0
    c = fit_light(lum, n[::2, ::2], (face_skin * inside)[::2, ::2])
    cid = geo.identity_light(id_tex)
    if c is None or cid is None:
        return None
    sh = shading(c, n)
    shi = shading(cid, nc)
    sel = (face_skin > 0.5) & inside
    ref, refi = float(sh[sel].mean()), float(shi[sel].mean())
    if ref <= 1e-3 or refi <= 1e-3:
        return None
    r = np.clip((sh / ref) / np.maximum(shi / refi, 0.2), *SHADE_RANGE)
    return np.where(inside, r, 1.0).astype(np.float32)



def expression_only(geo: Geometry, pts: np.ndarray, rot: np.ndarray | None = None) -> np.ndarray:
    """The mesh `pts` (crop px) with the face's own shape taken out: the canonical 3D face under the
    head's pose (pose_projection) plus only the part of the rest that lies in the expression basis
    (how a face moves: models/generator/build_geometry.py). rot: as pose_projection."""
    proj = pose_projection(pts, geo.mean, geo.depth, rot)
    r = (pts[:len(geo.depth)] - proj).reshape(-1)
    return (proj + (geo.expression.T @ (geo.expression @ r)).reshape(-1, 2)).astype(np.float32)


def pose_projection(pts: np.ndarray, mean: np.ndarray, depth: np.ndarray, rot: np.ndarray | None = None
                    ) -> np.ndarray:
    """The canonical 3D face (mean shape and depth) under the head's pose as seen in `pts` (crop px):
    rotation (head_rotation, unless given as rot), one scale and a shift fitted by least squares."""
    n = len(depth)
    if rot is None:
        rot = head_rotation(pts, mean, depth)
    p3 = np.c_[mean, depth].astype(np.float64)
    p3 -= p3.mean(0)
    q = p3 @ rot[:2].T.astype(np.float64)
    tgt = pts[:n].astype(np.float64)
    tc = tgt.mean(0)
    s = float((q * (tgt - tc)).sum() / max((q * q).sum(), 1e-9))
    return (s * q + tc).astype(np.float32)
