"""`anoncam reveal`: the original faces put back into new files, from each medium's sealed sidecar.

Stills: the stored image with every sealed region pasted back bit-exact, written as PNG (lossless).
Video: every frame of the stored video with the sealed face stream pasted back at its regions,
written losslessly (H.264 4:4:4, qp 0) with the same frame count and rate. The inputs are never
modified; an output is written to a temporary name and renamed when complete.
"""
from __future__ import annotations

import io
import os
import sys
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from .seal import SealError, open_sidecar
from .sinks.files import write_atomic

STILL_OUT = (".png", ".tif", ".tiff", ".bmp")
VIDEO_OUT = (".mp4", ".mkv", ".mov")


def _paste(img: np.ndarray, face: dict, pixels: np.ndarray, masks: list[bytes]) -> None:
    x0, y0, x1, y1 = face["roi"]
    region = img[y0:y1, x0:x1]
    if pixels.shape != region.shape:
        raise SealError(f"a sealed region {face['roi']} does not fit the media")
    if face.get("mask") is None:
        region[:] = pixels
    else:
        n = region.shape[0] * region.shape[1]
        m = np.unpackbits(np.frombuffer(masks[face["mask"]], np.uint8))[:n].reshape(region.shape[:2]).astype(bool)
        region[m] = pixels[m]


def reveal_still(media: Path, out: Path, identity) -> int:
    header, blobs = open_sidecar(media, identity)
    if header.get("kind") != "still":
        raise SealError(f"{media}: the sidecar is for a {header.get('kind')}, not a still")
    img = cv2.imdecode(np.frombuffer(media.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    if img is None or [img.shape[1], img.shape[0]] != header["size"]:
        raise SealError(f"{media}: cannot read it at the sealed size {header['size']}")
    for f in header["faces"]:
        pixels = cv2.imdecode(np.frombuffer(blobs[f["pixels"]], np.uint8), cv2.IMREAD_UNCHANGED)
        if pixels is None:
            raise SealError(f"{media}: a sealed region cannot be decoded")
        _paste(img, f, pixels, blobs)
    ok, buf = cv2.imencode(out.suffix, img)
    if not ok:
        raise SealError(f"{out}: cannot encode")
    write_atomic(out, buf.tobytes())
    return len(header["faces"])


def reveal_video(media: Path, out: Path, identity) -> int:
    import av
    header, blobs = open_sidecar(media, identity)
    if header.get("kind") != "video":
        raise SealError(f"{media}: the sidecar is for a {header.get('kind')}, not a video")
    masks = [blobs[i] for i in header["masks"]]
    if header.get("dropped"):
        print(f"anoncam: {media}: the camera could not seal the faces of {header['dropped']} frame(s) (its "
              "encoder was behind); they stay anonymized", file=sys.stderr)
    by_frame: dict[int, list[dict]] = {}
    for f in header["faces"]:
        by_frame.setdefault(f["frame"], []).append(f)
    faces = None
    if header["stream_frames"]:
        faces = av.open(io.BytesIO(blobs[header["stream"]])).decode(video=0)
    cap = cv2.VideoCapture(str(media))
    fps = cap.get(cv2.CAP_PROP_FPS) or header["fps"]
    w, h = header["size"]
    part = out.with_name(f".{out.stem}.part{out.suffix}")
    out.parent.mkdir(parents=True, exist_ok=True)
    container = av.open(str(part), "w")
    try:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w + w % 2, h + h % 2, "yuv444p"
        stream.options = {"qp": "0", "preset": "veryfast"}
        n = 0
        while True:
            ok, img = cap.read()
            if not ok:
                break
            if n in by_frame:
                face_img = next(faces).to_ndarray(format="bgr24")
                for f in by_frame[n]:
                    x0, y0, x1, y1 = f["roi"]
                    _paste(img, f, face_img[y0:y1, x0:x1], masks)
            if img.shape[:2] != (stream.height, stream.width):
                img = cv2.copyMakeBorder(img, 0, stream.height - h, 0, stream.width - w, cv2.BORDER_REPLICATE)
            for pk in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                container.mux(pk)
            n += 1
        if n != header["frames"]:
            raise SealError(f"{media}: {n} frames, the sidecar sealed {header['frames']}")
        for pk in stream.encode():
            container.mux(pk)
        container.close()
        os.replace(part, out)
    except BaseException:
        container.close()
        part.unlink(missing_ok=True)
        raise
    finally:
        cap.release()
    return len(header["faces"])


def out_name(src: Path, kind: str) -> str:
    if kind == "image":
        return src.with_suffix(".png").name
    return src.name if src.suffix.lower() in VIDEO_OUT else src.with_suffix(".mkv").name
