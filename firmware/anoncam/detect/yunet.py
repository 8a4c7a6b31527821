"""YuNet face detector (OpenCV zoo, 2023mar) on any backend.

`detect(img, min_face=N)` finds every face of at least N px (box long side) whatever the image size:
a pyramid of levels, the finest scaled so an N px face is DETECT_PX detector pixels across, each
coarser one LEVEL_STEP times smaller, until a level fits in one tile. A level larger than a tile is
cut into tiles overlapping by TILE_OVERLAP of a tile, so a face up to that size lies whole in one of
them; a larger face is at least DETECT_PX across on the next coarser level.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..backends import Backend, open_model
from ..types import Detection
from . import nms

STRIDES = (8, 16, 32)
# YuNet finds a face of this many detector pixels reliably: on the 6 face-api group photos scaled
# down, 23/23 faces at 26-44 px, 27/30 at 24 px, 14/22 at 16 px (int8 and fp32 alike).
DETECT_PX = 30
LEVEL_STEP = 4.0     # scale ratio between pyramid levels
TILE_OVERLAP = 0.25  # of a tile: faces up to 0.25 * 960 = 240 detector px (> 4 * 30) lie whole in a tile


def dynamic_yunet(path: Path) -> bytes:
    """The shipped file fixes its input at 640x640; free H and W so any multiple of 32 runs."""
    import onnx  # only here: 20+ ms of start-up that int8 files (dynamic already) do without
    m = onnx.load(str(path))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for i, name in ((2, "H"), (3, "W")):
        dims[i].ClearField("dim_value")
        dims[i].dim_param = name
    for out in m.graph.output:
        d = out.type.tensor_type.shape.dim[1]
        d.ClearField("dim_value")
        d.dim_param = "N"
    del m.graph.value_info[:]
    return m.SerializeToString()


def decode(outs: list[np.ndarray], h: int, w: int, score_thr: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YuNet heads (cls, obj, bbox, kps per stride) -> boxes x1y1x2y2, scores, 5 keypoints."""
    boxes, scores, kpss = [], [], []
    for i, s in enumerate(STRIDES):
        cls, obj, bbox, kps = outs[i][0, :, 0], outs[3 + i][0, :, 0], outs[6 + i][0], outs[9 + i][0]
        score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
        keep = np.where(score >= score_thr)[0]
        if keep.size == 0:
            continue
        cols = w // s
        r, c = np.divmod(keep, cols)
        bb = bbox[keep]
        cx, cy = (c + bb[:, 0]) * s, (r + bb[:, 1]) * s
        bw, bh = np.exp(bb[:, 2]) * s, np.exp(bb[:, 3]) * s
        boxes.append(np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1))
        k = kps[keep].reshape(-1, 5, 2)
        kpss.append(np.stack([(k[:, :, 0] + c[:, None]) * s, (k[:, :, 1] + r[:, None]) * s], 2))
        scores.append(score[keep])
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
    return (np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32),
            np.concatenate(kpss).astype(np.float32))


class YuNet:
    def __init__(self, backend: Backend, size: int = 320, score_threshold: float = 0.6,
                 nms_threshold: float = 0.3, tiles: int = 2, tile: int = 960):
        self.backend = backend
        self.size = size  # the single-pass size when `detect` is called without min_face
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.tiles = tiles
        # a backend with a fixed input (a TFLite) bounds the tile
        fixed = [v for v in (getattr(backend, "h", None), getattr(backend, "w", None)) if v]
        self.tile = min([tile, *fixed]) // 32 * 32

    @classmethod
    def from_file(cls, path: Path, threads: int = 2, providers: list[str] | None = None, **kw) -> YuNet:
        if not providers or providers == ["CPUExecutionProvider"]:
            be = open_model(path, "onnx", threads=threads, providers=providers)
            if be.input_shape[2:] == (None, None):  # dynamic already (our int8 files)
                return cls(be, **kw)
        # the shipped fp32 file fixes 640x640: free it first (and never let CUDA/TensorRT build an
        # engine for a shape that is not used)
        return cls(open_model(dynamic_yunet(path), "onnx", threads=threads, providers=providers), **kw)

    def _run(self, img: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h, w = img.shape[:2]
        return self._run_at(img, min(1.0, size / max(h, w)) if size else 1.0)

    def _run_at(self, img: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Detect on `img` resized by `scale`; boxes and keypoints in `img`'s pixels."""
        h, w = img.shape[:2]
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        # area averaging where it matters (over 2x down); bilinear is 5x faster at mild scales
        interp = cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR
        small = cv2.resize(img, (nw, nh), interpolation=interp) if (nw, nh) != (w, h) else img
        scale = nw / w
        ph, pw = -(-nh // 32) * 32, -(-nw // 32) * 32
        blob = np.zeros((1, 3, ph, pw), np.float32)
        for c, chan in enumerate(cv2.split(small)):
            blob[0, c, :nh, :nw] = chan
        boxes, scores, kps = decode(self.backend.run(blob), ph, pw, self.score_threshold)
        return boxes / scale, scores, kps / scale

    def tile_count(self, shape: tuple) -> int:
        return self.tiles * self.tiles if self.tiles and max(shape[:2]) > 1.5 * self.size else 0

    def _tile_rect(self, shape: tuple, t: int) -> tuple[int, int, int, int]:
        h, w = shape[:2]
        n = self.tiles
        th, tw = int(h / n * 1.25), int(w / n * 1.25)  # 25 % overlap so no face is cut in every tile
        r, c = divmod(t, n)
        y0 = min(h - th, max(0, round(r * (h - th) / max(1, n - 1))))
        x0 = min(w - tw, max(0, round(c * (w - tw) / max(1, n - 1))))
        return x0, y0, x0 + tw, y0 + th

    def pyramid(self, shape: tuple, min_face: float) -> list[tuple[float, list[tuple[int, int, int, int]]]]:
        """(scale, tiles as x0, y0, x1, y1 in image pixels) per level, finest first, for faces of at
        least `min_face` px."""
        h, w = shape[:2]
        scale = DETECT_PX / max(1.0, float(min_face))
        levels = []
        while True:
            if max(w, h) * scale <= self.tile:
                levels.append((scale, [(0, 0, w, h)]))
                return levels
            side = self.tile / scale  # a tile in image pixels
            xs, ys = _starts(w, side), _starts(h, side)
            levels.append((scale, [(x, y, min(w, x + int(side)), min(h, y + int(side)))
                                   for y in ys for x in xs]))
            scale /= LEVEL_STEP

    def passes(self, shape: tuple, min_face: float) -> int:
        return sum(len(t) for _, t in self.pyramid(shape, min_face))

    def detect(self, img: np.ndarray, tiles: str | int = "all", min_face: float | None = None) -> list[Detection]:
        """With `min_face`: every face of at least that many pixels, by the pyramid (the pipeline).
        Without: the whole frame at `size`, plus `tiles` x `tiles` tiles for small faces: all of them,
        one tile index, or "none" (a fixed single-scale pass, for references and drift checks)."""
        parts = []
        if min_face is not None:
            for scale, rects in self.pyramid(img.shape, min_face):
                for x0, y0, x1, y1 in rects:
                    b, s, k = self._run_at(img[y0:y1, x0:x1], scale)
                    if len(rects) > 1:  # a face cut by a tile's inner edge lies whole elsewhere
                        m = 12 / scale  # partial boxes start within a few px of the cut
                        w, h = img.shape[1], img.shape[0]
                        cut = (((b[:, 0] < m) & (x0 > 0)) | ((b[:, 1] < m) & (y0 > 0)) |
                               ((b[:, 2] > x1 - x0 - m) & (x1 < w)) | ((b[:, 3] > y1 - y0 - m) & (y1 < h)))
                        b, s, k = b[~cut], s[~cut], k[~cut]
                    parts.append((b + [x0, y0, x0, y0], s, k + [x0, y0]))
        else:
            parts.append(self._run(img, self.size))
            n = self.tile_count(img.shape)
            todo = range(n) if tiles == "all" else ([tiles % n] if n and isinstance(tiles, int) else [])
            for t in todo:
                x0, y0, x1, y1 = self._tile_rect(img.shape, t)
                b, s, k = self._run(img[y0:y1, x0:x1], self.size)
                parts.append((b + [x0, y0, x0, y0], s, k + [x0, y0]))
        boxes = np.concatenate([p[0] for p in parts]).astype(np.float32)
        scores = np.concatenate([p[1] for p in parts])
        kps = np.concatenate([p[2] for p in parts]).astype(np.float32)
        keep = nms(boxes, scores, self.score_threshold, self.nms_threshold)
        if len(parts) > 1:
            keep = _drop_contained(boxes, keep)
        h, w = img.shape[:2]
        out = []
        for i in keep:
            b = boxes[i].copy()
            b[[0, 2]] = np.clip(b[[0, 2]], 0, w)
            b[[1, 3]] = np.clip(b[[1, 3]], 0, h)
            if b[2] - b[0] >= 2 and b[3] - b[1] >= 2:
                out.append(Detection(box=b, score=float(scores[i]), kps=kps[i]))
        return out


def _starts(n: int, side: float) -> list[int]:
    """Start offsets of tiles of `side` px over `n` px, overlapping by at least TILE_OVERLAP."""
    if n <= side:
        return [0]
    step = side * (1 - TILE_OVERLAP)
    k = int(np.ceil((n - side) / step)) + 1
    return [int(i * (n - side) / (k - 1)) for i in range(k)]


def _drop_contained(boxes: np.ndarray, keep: list[int]) -> list[int]:
    """Drop a box lying mostly (> 60 %) inside a larger kept one: a face cut at a tile edge, found
    whole in the neighbouring tile or on a coarser level. The larger box covers it."""
    order = sorted(keep, key=lambda i: -float((boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])))
    out = []
    for i in order:
        b = boxes[i]
        area = max(1e-6, float((b[2] - b[0]) * (b[3] - b[1])))
        inside = False
        for j in out:
            o = boxes[j]
            iw = min(b[2], o[2]) - max(b[0], o[0])
            ih = min(b[3], o[3]) - max(b[1], o[1])
            if iw > 0 and ih > 0 and iw * ih > 0.6 * area:
                inside = True
                break
        if not inside:
            out.append(i)
    return out
