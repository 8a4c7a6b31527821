"""Atomic file writing: stills are written to a hidden temp name in the target folder and renamed;
videos are written to STEM.part.EXT and renamed when complete and read back. A crash leaves no half
file under the final name (what a .part holds is anonymized already; `recover` keeps what plays). ImageFileSink and VideoFileSink are the
sinks of `anoncam anonymize`: one output file each."""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from ..types import FrameResult

FOURCC_BY_EXT = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v",
                 ".webm": "VP80"}
CODEC_BY_FOURCC = {"mp4v": "mpeg4", "fmp4": "mpeg4", "xvid": "mpeg4", "divx": "mpeg4", "mjpg": "mjpeg",
                   "avc1": "libx264", "h264": "libx264", "x264": "libx264", "vp80": "libvpx"}
FORMAT_BY_EXT = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi", ".webm": "webm"}
FRAGMENTED = {".mp4", ".m4v", ".mov"}  # crash-safe as fragmented MP4; MKV/AVI play without an index


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
    """A video written with PyAV to STEM.part.EXT (the container follows the extension) and renamed to
    PATH by commit() once it reads back; abort() removes it. Every write error raises (a full disk is
    an OSError, never a silent empty file).

    `crash_safe` (the daemon's segments): MP4/MOV are fragmented, a fragment per frame (about 1 %
    larger), each written out as soon as it is cut (the next frame closes it), and the file is fsynced
    once a second: after SIGKILL the .part file plays up to its last frame but one, after a power cut
    up to the last fsync (`recover` trims a torn fragment); MKV and AVI need no index to play."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int], fourcc: str | None = None,
                 crash_safe: bool = False):
        import av
        self.path = Path(path)
        self.part = self.path.with_name(f"{self.path.stem}.part{self.path.suffix}")
        private_dir(self.path.parent)
        ext = self.path.suffix.lower()
        code = fourcc or FOURCC_BY_EXT.get(ext, "mp4v")
        codec = CODEC_BY_FOURCC.get(code.lower())
        self.size, self.frames, self.crash_safe = size, 0, crash_safe
        self.gop = max(1, round(fps))  # a keyframe and an fsync every second
        options = {}
        if crash_safe and ext in FRAGMENTED:
            options["movflags"] = "frag_every_frame+empty_moov+default_base_moof"
        if crash_safe:
            options["flush_packets"] = "1"  # each fragment goes to the file as soon as it is cut
        self._fd = None
        try:
            if codec is None:
                raise ValueError(f"fourcc {code!r} (known: {', '.join(sorted(CODEC_BY_FOURCC))})")
            self.out = av.open(str(self.part), "w", format=FORMAT_BY_EXT.get(ext),
                               container_options=options)
            self.stream = self.out.add_stream(codec, rate=Fraction(fps).limit_denominator(100000))
            self.stream.width, self.stream.height = size
            self.stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
            self.stream.gop_size = self.gop
            self.stream.thread_count = 1
            if codec == "libx264":
                self.stream.options = {"preset": "veryfast", "crf": "20"}
            else:  # as OpenCV's writer: about one bit per pixel per second, quality-bounded
                self.stream.bit_rate = int(size[0] * size[1] * fps)
            self.stream.codec_context.open()
        except Exception as e:
            self._close_quietly()
            self.part.unlink(missing_ok=True)
            raise ValueError(f"{self.path}: cannot write video ({code} at {size[0]}x{size[1]}): {e}") from e

    def write(self, img: np.ndarray) -> None:
        import av
        if (img.shape[1], img.shape[0]) != self.size:
            img = cv2.resize(img, self.size)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="bgr24")
        for pk in self.stream.encode(frame):
            self.out.mux(pk)
        self.frames += 1
        if self.crash_safe and self.frames % self.gop == 0:
            self._sync()  # what the muxer wrote so far survives a power cut

    def commit(self) -> Path:
        """Finish the file, check it reads back with every frame, rename it into place."""
        try:
            for pk in self.stream.encode():
                self.out.mux(pk)
            self.out.close()
            if self.crash_safe:
                self._sync()
        except BaseException:
            self._close_quietly()
            raise
        self._close_fd()
        n = count_frames(self.part)
        if n != self.frames:
            raise OSError(f"{self.part.name}: {self.frames} frames written, {n} read back")
        os.replace(self.part, self.path)
        _fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        self._close_quietly()
        self.part.unlink(missing_ok=True)

    def salvage(self) -> Path | None:
        """After a write error: close what can be closed and keep the part that plays (see recover)."""
        self._close_quietly()
        return recover(self.part)

    def _close_quietly(self) -> None:
        out = getattr(self, "out", None)
        if out is not None:
            try:
                out.close()
            except Exception:
                pass
        self._close_fd()

    def _sync(self) -> None:
        if self._fd is None:
            if not self.part.exists():  # the muxer has not written its header yet
                return
            self._fd = os.open(self.part, os.O_RDONLY)
            _fsync_dir(self.part.parent)
        os.fsync(self._fd)

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def count_frames(path: Path) -> int:
    """Video packets that demux from `path` (0 when it does not open)."""
    import av
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                return 0
            return sum(1 for pk in c.demux(c.streams.video[0]) if pk.size)
    except (av.FFmpegError, OSError, ValueError):
        return 0


def trim_fragments(path: Path) -> int:
    """Cut a fragmented MP4/MOV after its last complete fragment (a crash leaves a torn one): keep
    whole top-level boxes, drop a trailing moof without its mdat. Returns the bytes kept."""
    size, keep, pos = path.stat().st_size, 0, 0
    with open(path, "rb") as f:
        while pos + 8 <= size:
            f.seek(pos)
            head = f.read(16)
            n, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if n == 1 and len(head) >= 16:
                n = int.from_bytes(head[8:16], "big")
            elif n == 0:
                n = size - pos
            if n < 8 or pos + n > size:
                break
            pos += n
            if kind != b"moof":
                keep = pos
    if keep < size:
        os.truncate(path, keep)
    return keep


def recover(part: Path) -> Path | None:
    """A STEM.part.EXT left by a crash or a write error: trim a torn MP4 fragment, then keep the file
    under its final name if any frame reads back (returned), else remove it (None). Its content was
    anonymized before it was written."""
    final = part.with_name(part.name.replace(".part", "", 1))
    if part.suffix.lower() in FRAGMENTED and part.stat().st_size:
        trim_fragments(part)
    if count_frames(part) == 0:
        part.unlink(missing_ok=True)
        return None
    os.replace(part, final)
    return final


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
