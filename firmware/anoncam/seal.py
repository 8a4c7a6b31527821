"""Sealing: the original pixels of each anonymized face, encrypted to the owner's public key.

In the frame loop `SealPolicy.decide` copies, before anonymizing, the region each face's cover
will touch (the Anonymizer's own ROI; pixels of privacy zones are left out) into `FrameResult.sidecar
["seal"]` (memory only). A sink then seals them beside its media as MEDIA.age, an age file to the
owner's X25519 recipient (a fresh file key per file, made by age):
  stills: every region as lossless WebP (bit-exact; 0.3-0.4x the bytes of OpenCV's PNG);
  video:  one face-only stream per segment (the regions pasted on black, H.264 4:4:4 at
          `privacy.video_crf`, x264 preset medium on one thread, encoded in memory by a worker thread
          with PyAV, never a file; reveal reads whatever codec FFmpeg decodes);
  MQTT snapshots: the regions scaled to the snapshot, as a still, published beside it (SealedSnapshot).
Off the frame loop: the video encoder has its own thread; a still's PNG + age and a segment's flush +
age + sidecar write run on SealWriter's thread. Both queues are bounded; what does not fit is dropped
(memory only, never written), logged and counted: fail closed, the media stays anonymized.
Inside (the payload): MAGIC, a JSON header (the media's name and sha256, frame size, frames, per-face
frame/track/ROI/blob refs) and the blobs, padded to a size bucket. In the clear: age's header and the
padded size, nothing else (no boxes, no count of faces).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import queue
import struct
import threading
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pyrage

from . import assets, registry
from .anonymize.masks import face_polygon, roi_for
from .config import AnonymizeConfig, Config
from .keys import owner_recipient  # noqa: F401  (callers take it from here too)
from .policy import default_policy
from .types import Face

log = logging.getLogger(__name__)

MAGIC = b"ANONCAM-SEAL\x01"
SUFFIX = ".age"
MIN_BUCKET = 4096
# The face stream's encoder: at crf 17 every restored region >= 40 dB in bench/seal_bench.py. libx265
# (crf 18, preset fast, x265-params pools=none:frame-threads=1) needs ~0.6x the bytes for the same
# PSNR but ~3x the CPU: it fell behind the 25 fps camera there (README, owner keys).
VIDEO_CODEC = "libx264"
LOSSLESS_WEBP = [cv2.IMWRITE_WEBP_QUALITY, 101]  # above 100: lossless (reveal decodes PNG of older sidecars too)
VIDEO_OPTIONS = {"preset": "medium"}
VIDEO_QUEUE = 16         # frames of face regions waiting for the live encoder (about 0.6 s at 25 fps)
SEAL_JOBS = 4            # stills and segments waiting for SealWriter


class SealError(ValueError):
    """A sidecar is missing, damaged, truncated, for other media, or sealed to another key."""


class WrongKey(SealError):
    pass


def sidecar_path(media: Path) -> Path:
    return Path(media).with_name(Path(media).name + SUFFIX)


file_sha256 = assets.sha256_file  # the media file's sha256, bound into its sidecar


class Crops:
    """One frame's original face regions: [(track_id, (x0, y0, x1, y1), pixels, mask or None)].
    Memory only; its repr shows no pixels."""
    __slots__ = ("items",)

    def __init__(self, items: list):
        self.items = items

    def __repr__(self) -> str:
        return f"<Crops: {len(self.items)} region(s), memory only>"


class SealPolicy:
    """Wraps a policy: after it decides, copy the region each anonymized face will cover."""

    def __init__(self, inner, cfg: AnonymizeConfig):
        self.inner, self.cfg = inner, cfg

    @property
    def method(self) -> str:  # Control switches the inner policy's method
        return self.inner.method

    @method.setter
    def method(self, name: str) -> None:
        self.inner.method = name

    def decide(self, frame: np.ndarray, faces: list[Face], sidecar: dict) -> None:
        self.inner.decide(frame, faces, sidecar)
        items = []
        for f in faces:
            if f.method is None:
                continue
            roi = face_roi(self.cfg, f, frame.shape)
            if roi is not None:
                x0, y0, x1, y1 = roi
                items.append((f.track_id, roi, frame[y0:y1, x0:x1].copy(), zone_free(self.cfg, roi, frame.shape)))
        sidecar["seal"] = Crops(items)


def policy_for(cfg: Config) -> SealPolicy:
    return SealPolicy(default_policy(cfg), cfg.anonymize)


def face_roi(cfg: AnonymizeConfig, f: Face, shape) -> tuple[int, int, int, int] | None:
    """The rectangle Anonymizer.face reads and writes for this face."""
    scale = getattr(cfg, registry.spec(f.method or cfg.method).mask_scale_field)
    poly = face_polygon(f.box, f.landmarks, scale)
    face_px = float(max(poly.max(0) - poly.min(0)))
    return roi_for(poly, cfg.feather * face_px + 2, shape)


def zone_free(cfg: AnonymizeConfig, roi, shape) -> np.ndarray | None:
    """Mask (1 = restore) of the ROI without privacy-zone pixels; None when no zone touches it."""
    if not cfg.privacy_zones:
        return None
    h, w = shape[:2]
    x0, y0, x1, y1 = roi
    zones = []
    for poly in cfg.privacy_zones:
        p = np.array(poly, np.float32)
        if p.max() <= 1.0:
            p = p * [w, h]
        zones.append(np.round(p - [x0, y0]).astype(np.int32))
    m = np.ones((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(m, zones, 0)
    return None if m.all() else m


# payload -------------------------------------------------------------------------------------------
def pack(header: dict, blobs: list[bytes]) -> bytes:
    refs, off = [], 0
    for b in blobs:
        refs.append([off, len(b)])
        off += len(b)
    header = {**header, "blobs": refs}
    h = json.dumps(header, separators=(",", ":")).encode()
    body = MAGIC + struct.pack(">I", len(h)) + h + b"".join(blobs)
    return body + bytes(bucket(len(body)) - len(body))


def bucket(n: int) -> int:
    """Sizes grow in steps of 1.1x from 4 KiB: the sealed size shows it only within 10 % (at most 10 %
    more bytes; 1.25x steps cost up to 25 %)."""
    size = MIN_BUCKET
    while size < n:
        size = int(size * 1.1) + 1
    return size


def unpack(payload: bytes, where: str) -> tuple[dict, list[bytes]]:
    try:
        if not payload.startswith(MAGIC):
            raise ValueError("not an anoncam sidecar")
        n = struct.unpack(">I", payload[len(MAGIC):len(MAGIC) + 4])[0]
        start = len(MAGIC) + 4
        header = json.loads(payload[start:start + n])
        base = start + n
        blobs = [payload[base + o: base + o + ln] for o, ln in header["blobs"]]
        if any(len(b) != ln for b, (_, ln) in zip(blobs, header["blobs"])):
            raise ValueError("truncated")
        return header, blobs
    except (ValueError, KeyError, TypeError, struct.error) as e:
        raise SealError(f"{where}: damaged sidecar ({e})") from None


def encrypt(payload: bytes, recipient) -> bytes:
    return pyrage.encrypt(payload, [recipient])


def open_sidecar(media: Path, identity) -> tuple[dict, list[bytes]]:
    """Decrypt and check MEDIA.age against MEDIA (its sha256 is inside)."""
    path = sidecar_path(media)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SealError(f"{path}: no sidecar ({e.strerror})") from None
    try:
        payload = pyrage.decrypt(data, [identity])
    except pyrage.DecryptError as e:
        if "no matching keys" in str(e).lower():
            raise WrongKey(f"{path}: sealed to another owner key") from None
        raise SealError(f"{path}: damaged or truncated ({e})") from None
    header, blobs = unpack(payload, str(path))
    if header.get("media_sha256") != file_sha256(media):
        raise SealError(f"{path}: does not belong to {Path(media).name} (sealed for "
                        f"{header.get('media_name')!r}; swapped or the media was changed)")
    return header, blobs


# stills --------------------------------------------------------------------------------------------
def seal_still(crops: Crops | None, media: bytes, name: str, shape, recipient) -> bytes:
    """The sealed sidecar of one still whose encoded bytes are `media`."""
    faces, blobs = [], []
    for track, roi, pixels, mask in (crops.items if crops is not None else []):
        faces.append({"frame": 0, "track": int(track), "roi": [int(v) for v in roi], "pixels": len(blobs),
                      "mask": None if mask is None else len(blobs) + 1})
        blobs.append(cv2.imencode(".webp", pixels, LOSSLESS_WEBP)[1].tobytes())
        if mask is not None:
            blobs.append(np.packbits(mask).tobytes())
    header = {"v": 1, "kind": "still", "media_name": name, "media_sha256": hashlib.sha256(media).hexdigest(),
              "size": [int(shape[1]), int(shape[0])], "frames": 1, "faces": faces}
    return encrypt(pack(header, blobs), recipient)


# video ---------------------------------------------------------------------------------------------
class VideoSeal:
    """The face-only stream of one video segment, encoded in memory by a worker thread."""

    def __init__(self, fps: float, size: tuple[int, int], crf: int = 17, live: bool = False):
        """`live` (the daemon): add() never waits; a frame whose regions do not fit the encoder's
        queue is not sealed (dropped in memory, logged, counted in the header). Otherwise (offline
        anonymize) add() waits for the encoder."""
        import av  # only needed when video is sealed
        self.size, self.fps, self.crf, self.live = size, fps, crf, live
        self.dropped = 0
        self.faces: list[dict] = []
        self.masks: list[bytes] = []
        self.stream_frames: list[int] = []  # segment frame number of each stream frame
        self.frames = 0
        self.buf = io.BytesIO()
        self.out = av.open(self.buf, "w", format="matroska")
        w, h = size[0] + size[0] % 2, size[1] + size[1] % 2
        self.stream = self.out.add_stream(VIDEO_CODEC, rate=Fraction(fps).limit_denominator(1001))
        self.stream.width, self.stream.height, self.stream.pix_fmt = w, h, "yuv444p"
        self.stream.options = {"crf": str(crf), **VIDEO_OPTIONS}
        self.stream.thread_count = 1
        self.canvas = (h, w)
        self.q: queue.Queue = queue.Queue(VIDEO_QUEUE)
        self.error: BaseException | None = None
        self.worker = threading.Thread(target=self._run, name="seal-video", daemon=True)
        self.worker.start()

    def add(self, crops: Crops | None) -> None:
        """The next frame of the segment (None or no regions: nothing to seal in it)."""
        n = self.frames
        self.frames += 1
        if crops is None or not crops.items:
            return
        if self.error is not None:
            if self.live:  # logged by the encoder's thread; this segment gets no sidecar
                return
            raise RuntimeError(f"sealing failed: {self.error}")
        if self.live:
            try:
                self.q.put_nowait(crops.items)
            except queue.Full:  # the encoder is behind: these regions are dropped, never written
                self.dropped += 1
                if self.dropped in (1, 10) or self.dropped % 100 == 0:
                    log.error("sealing is behind: the faces of %d frame(s) of this segment were not sealed "
                              "(the encoder cannot keep up)", self.dropped)
                return
        else:
            self.q.put(crops.items)
        for track, roi, _, mask in crops.items:
            self.faces.append({"frame": n, "track": int(track), "roi": [int(v) for v in roi],
                               "mask": None if mask is None else len(self.masks)})
            if mask is not None:
                self.masks.append(np.packbits(mask).tobytes())
        self.stream_frames.append(n)

    def _run(self) -> None:
        import av
        while True:
            items = self.q.get()
            if items is None:
                return
            if self.error is not None:
                continue
            try:
                img = np.zeros((*self.canvas, 3), np.uint8)
                for _, (x0, y0, x1, y1), pixels, _ in items:
                    img[y0:y1, x0:x1] = pixels
                for pk in self.stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                    self.out.mux(pk)
            except BaseException as e:  # reported to the frame loop's thread by add/finish
                self.error = e
                log.error("sealing the face stream failed: %s: %s", type(e).__name__, e)

    def finish(self, media: Path) -> bytes:
        """Flush and return the payload (not yet encrypted) bound to the written `media` file."""
        self.q.put(None)
        self.worker.join()
        if self.error is not None:
            raise RuntimeError(f"sealing failed: {self.error}")
        for pk in self.stream.encode():
            self.out.mux(pk)
        self.out.close()
        stream = self.buf.getvalue() if self.stream_frames else b""
        self.buf = io.BytesIO()
        header = {"v": 1, "kind": "video", "media_name": Path(media).name, "media_sha256": file_sha256(media),
                  "size": list(self.size), "fps": self.fps, "frames": self.frames, "crf": self.crf,
                  "codec": f"{self.stream.codec_context.name} yuv444p matroska", "dropped": self.dropped, "stream_frames": self.stream_frames, "faces": self.faces,
                  "stream": 0, "masks": list(range(1, 1 + len(self.masks)))}
        return pack(header, [stream, *self.masks])

    def abort(self) -> None:
        self.error = self.error or RuntimeError("aborted")
        self.q.put(None)
        self.worker.join()
        try:
            self.out.close()
        except Exception:
            pass
        self.buf = io.BytesIO()


# off the frame loop ----------------------------------------------------------------------------------
class SealWriter:
    """Seals beside the frame loop: one worker thread takes jobs from a bounded queue (a still: PNG
    regions + age + sidecar; a segment: the face stream's flush + age + sidecar) and writes each
    sidecar atomically, after its media. A job that does not fit (the worker is behind) is dropped:
    its original pixels are released in memory, never written anywhere; the media stays, anonymized,
    without a sidecar (logged, counted). close() waits for every queued job."""

    def __init__(self, recipient, jobs: int = SEAL_JOBS):
        self.recipient = recipient
        self.q: queue.Queue = queue.Queue(jobs)
        self.dropped = self.failed = self.written = 0
        self.thread = threading.Thread(target=self._run, name="seal-writer", daemon=True)
        self.thread.start()

    def still(self, crops: Crops | None, media: Path, data: bytes, shape) -> bool:
        """Seal the faces of the still written at `media` (its encoded bytes `data`)."""
        return self._put(("still", Path(media), crops, data, tuple(shape)))

    def segment(self, seal: VideoSeal, media: Path) -> bool:
        """Finish the face stream of the segment written at `media` and seal it."""
        if self._put(("video", Path(media), seal)):
            return True
        seal.abort()
        return False

    def _put(self, job: tuple) -> bool:
        try:
            self.q.put_nowait(job)
            return True
        except queue.Full:
            self.dropped += 1
            log.error("sealing %s skipped: the sealing worker is behind (%d jobs waiting); its faces are "
                      "not sealed (%d skipped so far)", job[1].name, self.q.qsize(), self.dropped)
            return False

    def _run(self) -> None:
        from .sinks.files import write_atomic
        while True:
            job = self.q.get()
            if job is None:
                return
            kind, media = job[0], job[1]
            try:
                if kind == "still":
                    sealed = seal_still(job[2], job[3], media.name, job[4], self.recipient)
                else:
                    sealed = encrypt(job[2].finish(media), self.recipient)
                if media.exists():  # else retention deleted it meanwhile: no orphan sidecar
                    write_atomic(sidecar_path(media), sealed)
                    self.written += 1
            except Exception as e:  # the anonymized media stays; its faces cannot be restored
                self.failed += 1
                log.error("sealing %s failed: %s: %s", media.name, type(e).__name__, e)
                if kind == "video":
                    job[2].abort()
            finally:
                job = None  # release the original pixels now

    def close(self) -> None:
        """Wait until every queued job is sealed and written, then end the worker."""
        while self.thread.is_alive():
            try:
                self.q.put(None, timeout=1.0)  # waits for room while the worker finishes a job
                break
            except queue.Full:
                continue
        self.thread.join()


# MQTT snapshots -------------------------------------------------------------------------------------
def scaled(crops: Crops | None, scale: float, shape) -> Crops | None:
    """The regions as they fall in a frame scaled by `scale` to `shape` (a snapshot)."""
    if crops is None or scale == 1:
        return crops
    h, w = shape[:2]
    items = []
    for track, (x0, y0, x1, y1), pixels, mask in crops.items:
        r = (int(x0 * scale), int(y0 * scale), min(w, int(np.ceil(x1 * scale))), min(h, int(np.ceil(y1 * scale))))
        size = (r[2] - r[0], r[3] - r[1])
        if size[0] < 1 or size[1] < 1:
            continue
        px = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
        m = None if mask is None else cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        items.append((track, r, px, m))
    return Crops(items)


class SealedSnapshot:
    """An MQTT snapshot and its sealed faces, both rendered on the connection's worker thread:
    jpeg() is the anonymized JPEG as published; sealed() the age file of the frame's original face
    regions scaled to the snapshot, bound to that JPEG's sha256 (a still sidecar: a consumer that
    saves the two as NAME.jpg and NAME.jpg.age can `anoncam reveal NAME.jpg`)."""

    def __init__(self, render, crops: Crops | None, scale: float, shape, name: str, recipient):
        self._render, self.crops, self.scale, self.shape = render, crops, scale, shape
        self.name, self.recipient = name, recipient
        self._jpeg: bytes | None = None
        self._lock = threading.Lock()

    def jpeg(self) -> bytes:
        with self._lock:
            if self._jpeg is None:
                self._jpeg = self._render()
            return self._jpeg

    def sealed(self) -> bytes:
        data = self.jpeg()
        crops, self.crops = self.crops, None  # the original pixels are held no longer than this
        return seal_still(scaled(crops, self.scale, self.shape), data, self.name, self.shape, self.recipient)
