"""Atomic file writing: stills are written to a hidden temp name in the target folder and renamed;
videos are written to STEM.part.EXT and renamed when complete. A crash leaves no half file under the
final name (and what a .part holds is anonymized already). ImageFileSink and VideoFileSink are the
sinks of `anoncam anonymize`: one output file each."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..types import FrameResult

FOURCC_BY_EXT = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v",
                 ".webm": "VP80"}


def encode_image(img: np.ndarray, ext: str, quality: int = 90) -> bytes:
    params = []
    if ext.lower() in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    elif ext.lower() == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, quality]
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise ValueError(f"cannot encode an image as {ext}")
    return buf.tobytes()


DIR_MODE = 0o750  # folders of recordings of people: owner and group only


def private_dir(path: Path) -> Path:
    """Create `path` and any missing parents with DIR_MODE (existing folders are left as they are)."""
    target = p = Path(path)
    missing = []
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            pass
        os.chmod(d, DIR_MODE)  # mkdir's mode is masked by the umask; this one is meant
    return target


def write_atomic(path: Path, data: bytes) -> None:
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_both(path: Path, data: bytes, sidecar: Path, sealed: bytes) -> None:
    """Media and its sealed sidecar, each atomically; a failure leaves neither."""
    write_atomic(path, data)
    try:
        write_atomic(sidecar, sealed)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


class VideoFile:
    """A video written to STEM.part.EXT (the container follows the extension) and renamed to PATH by commit(); abort() removes it."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int], fourcc: str | None = None):
        self.path = Path(path)
        self.part = self.path.with_name(f"{self.path.stem}.part{self.path.suffix}")
        private_dir(self.path.parent)
        code = fourcc or FOURCC_BY_EXT.get(self.path.suffix.lower(), "mp4v")
        self.writer = cv2.VideoWriter()
        ok = self.writer.open(str(self.part), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*code), fps, size)
        if not ok:
            self.part.unlink(missing_ok=True)
            raise ValueError(f"{self.path}: cannot write video ({code} at {size[0]}x{size[1]})")
        self.size = size
        self.frames = 0

    def write(self, img: np.ndarray) -> None:
        if (img.shape[1], img.shape[0]) != self.size:
            img = cv2.resize(img, self.size)
        self.writer.write(img)
        self.frames += 1

    def commit(self) -> Path:
        self.writer.release()
        os.replace(self.part, self.path)
        return self.path

    def abort(self) -> None:
        self.writer.release()
        self.part.unlink(missing_ok=True)


class ImageFileSink:
    """One still written to `path` (the format follows the extension); a dropped frame writes
    nothing and `dropped` says why. With an owner `recipient`, PATH.age holds its sealed faces."""

    def __init__(self, path: Path, quality: int = 92, recipient=None):
        self.path, self.quality, self.recipient = Path(path), quality, recipient
        self.dropped: str | None = None

    def write(self, result: FrameResult) -> None:
        if result.image is None:
            self.dropped = result.reason or "dropped"
            return
        data = encode_image(result.image, self.path.suffix, self.quality)
        if self.recipient is None:
            write_atomic(self.path, data)
            return
        from ..seal import seal_still, sidecar_path
        sealed = seal_still(result.sidecar.get("seal"), data, self.path.name, result.image.shape, self.recipient)
        write_both(self.path, data, sidecar_path(self.path), sealed)

    def close(self) -> None:
        pass


class VideoFileSink:
    """A video at the source's size and rate that keeps every frame's place: a dropped frame is
    written as a frame filled with `fill` (the solid cover colour). close() renames it into place,
    abort() removes it."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int], fill=(0, 0, 0), recipient=None, crf: int = 16):
        self.video = VideoFile(path, fps, size)
        self.fill = np.full((size[1], size[0], 3), fill, np.uint8)
        self.recipient, self.seal = recipient, None
        if recipient is not None:
            from ..seal import VideoSeal
            self.seal = VideoSeal(fps, size, crf)

    def write(self, result: FrameResult) -> None:
        self.video.write(self.fill if result.image is None else result.image)
        if self.seal is not None:
            self.seal.add(None if result.image is None else result.sidecar.get("seal"))

    def close(self) -> Path:
        if self.seal is None:
            return self.video.commit()
        from ..seal import encrypt, sidecar_path
        path = self.video.commit()
        try:
            write_atomic(sidecar_path(path), encrypt(self.seal.finish(path), self.recipient))
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path

    def abort(self) -> None:
        self.video.abort()
        if self.seal is not None:
            self.seal.abort()
