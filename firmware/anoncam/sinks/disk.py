"""Disk sink: anonymized JPEG stills and video segments, atomic writes, size/age/free-space retention.

Layout: <dir>/<camera>/stills/<camera>_<UTC time>_<frame>.jpg
        <dir>/<camera>/video/<camera>_<UTC time>.mp4
With an owner key each still and segment has a sealed sidecar NAME.age (anoncam/seal.py), written
atomically after its media and deleted with it by retention.

Faults (README "Faults"): the open segment is a crash-safe STEM.part.EXT (sinks/files.py VideoFile);
after SIGKILL or a power cut the next start keeps what of it plays under its final name and logs it
(its sealed faces were in memory: that segment has no sidecar). A write error (a full disk) ends the
segment there, keeps what of it plays, and frees space by deleting the oldest output.
"""
from __future__ import annotations

import errno
import logging
import shutil
import time
from pathlib import Path

from ..config import OutputConfig
from ..types import FrameResult
from .files import VideoFile, encode_image, private_dir, recover, write_atomic

log = logging.getLogger(__name__)


FULL_RETRY_S = 2.0  # a full disk is tried again after this long (after retention freed what it could)


def _stamp(ts: float) -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(ts)) + f"{ts % 1:.3f}"[1:].replace(".", "_")


class DiskSink:
    def __init__(self, cfg: OutputConfig, camera: str, fps: float, recipient=None, crf: int = 16):
        self.cfg, self.camera, self.fps = cfg, camera, fps
        self.recipient, self.crf = recipient, crf  # owner public key: seal the faces beside the media
        self.sealer = None  # SealWriter: seals and writes the sidecars beside the frame loop
        if recipient is not None:
            from ..seal import SealWriter
            self.sealer = SealWriter(recipient)
        self.root = Path(cfg.dir) / camera
        self.stills_dir, self.video_dir = self.root / "stills", self.root / "video"
        for d in (self.stills_dir, self.video_dir):
            private_dir(d)
            for stale in sorted(d.glob("*.part.*")):  # a segment open at a crash: keep what plays
                kept = recover(stale)
                if kept is None:
                    log.warning("recovery: %s held no playable frame; removed", stale.name)
                else:
                    log.warning("recovery: kept %s after a crash (its end may be missing%s)", kept.name,
                                "; its faces were not sealed" if recipient is not None else "")
            for stale in d.glob(".*.tmp"):  # a still or sidecar half written at a crash
                log.warning("recovery: removed the unfinished %s", stale.name)
                stale.unlink(missing_ok=True)
        self.video: VideoFile | None = None
        self.seal = None  # the open segment's VideoSeal
        self._frames_in_segment = 0
        self._last_still_frame: int | None = None
        self.files_deleted = 0
        self.write_errors = 0
        self._hold_until = 0.0  # after a full disk: frames are not written until then (monotonic)

    # frames ---------------------------------------------------------------------------------
    def write(self, result: FrameResult) -> None:
        if time.monotonic() < self._hold_until:
            return  # the disk was full a moment ago: one attempt per FULL_RETRY_S, not per frame
        try:
            self._write(result)
        except Exception as e:
            self.write_errors += 1
            if _is_full(e):
                self._hold_until = time.monotonic() + FULL_RETRY_S
            # A full disk fails every write, and retention otherwise only runs after a good one:
            # end the segment (keeping what plays), free space now so the next frame can be
            # written, then report the failure.
            self._salvage_segment()
            try:
                self.enforce_retention(full=_is_full(e))
            except OSError as e2:
                log.error("retention failed: %s", e2)
            raise

    def _write(self, result: FrameResult) -> None:
        if result.image is None:
            return
        img = result.image
        if self.cfg.stills.enabled:
            every = max(1, round(self.cfg.stills.every_s * self.fps))
            if self._last_still_frame is None or result.index - self._last_still_frame >= every:
                path = self.stills_dir / f"{self.camera}_{_stamp(result.timestamp)}_{result.index:08d}.jpg"
                data = encode_image(img, ".jpg", self.cfg.stills.quality)
                write_atomic(path, data)
                if self.sealer is not None:  # its sidecar follows, from the sealing worker
                    self.sealer.still(result.sidecar.get("seal"), path, data, img.shape)
                self._last_still_frame = result.index
                self.enforce_retention()
        if self.cfg.video.enabled:
            if self.video is None:
                name = f"{self.camera}_{_stamp(result.timestamp)}{self.cfg.video.extension}"
                self.video = VideoFile(self.video_dir / name, self.fps, (img.shape[1], img.shape[0]),
                                       self.cfg.video.fourcc, crash_safe=True)
                self._frames_in_segment = 0
                if self.recipient is not None:
                    from ..seal import VideoSeal
                    self.seal = VideoSeal(self.fps, self.video.size, self.crf, live=True)
            self.video.write(img)
            if self.seal is not None:
                self.seal.add(result.sidecar.get("seal"))
            self._frames_in_segment += 1
            if self._frames_in_segment >= round(self.cfg.video.segment_s * self.fps):
                self._close_segment()

    def _close_segment(self) -> None:
        if self.video is None:
            return
        path = self.video.commit()
        self.video, seal, self.seal = None, self.seal, None
        if seal is not None:  # flushed, sealed and written beside it by the sealing worker
            self.sealer.segment(seal, path)
        log.info("segment written: %s (%d frames)", path.name, self._frames_in_segment)
        self.enforce_retention()

    def _salvage_segment(self) -> None:
        """The open segment after a write error: keep what of it plays, without a sealed sidecar."""
        video, seal, self.video, self.seal = self.video, self.seal, None, None
        if video is None:
            return
        if seal is not None:
            seal.abort()
        kept = video.salvage()
        if kept is None:
            log.error("segment %s lost: nothing of it plays", video.path.name)
        else:
            log.error("segment %s cut short by a write error (%d frames given)%s", kept.name, video.frames,
                      "; its faces were not sealed" if seal is not None else "")

    def close(self) -> None:
        try:
            self._close_segment()
        except Exception:
            self._salvage_segment()
            raise
        finally:
            if self.sealer is not None:
                self.sealer.close()  # stop waits for the sidecars

    # retention ------------------------------------------------------------------------------
    def _outputs(self) -> list[tuple[float, int, Path]]:
        """(mtime, bytes, media) oldest first; a sealed sidecar counts with its media (alone if orphaned)."""
        files = []
        for d in (self.stills_dir, self.video_dir):
            for p in d.iterdir():
                if not p.is_file() or ".part." in p.name or p.name.startswith("."):
                    continue
                if p.suffix == ".age" and p.with_suffix("").exists():
                    continue
                st = p.stat()
                side = p.with_name(p.name + ".age")
                extra = side.stat().st_size if p.suffix != ".age" and side.exists() else 0
                files.append((st.st_mtime, st.st_size + extra, p))
        return sorted(files)

    def enforce_retention(self, full: bool = False) -> None:
        """Delete the oldest output while over the size cap, older than max age, or short of free space.
        `full`: a write failed for want of space: also free room for two files like the largest kept
        (whatever min_free_bytes says)."""
        r = self.cfg.retention
        files = self._outputs()
        total = sum(s for _, s, _ in files)
        need = r.min_free_bytes
        if full:
            need = max(need, 2 * max((s for _, s, _ in files), default=0), 1 << 20)
        now = time.time()
        for mtime, size, path in files[:-1]:  # the newest file always stays
            free = shutil.disk_usage(self.root).free
            too_old = r.max_age_h is not None and now - mtime > r.max_age_h * 3600
            if not (total > r.max_bytes or too_old or free < need):
                break
            why = "size cap" if total > r.max_bytes else ("age" if too_old else "free space")
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".age").unlink(missing_ok=True)
            total -= size
            self.files_deleted += 1
            log.info("retention (%s): deleted %s", why, path.name)


def _is_full(e: BaseException) -> bool:
    """A write failed for want of space (ENOSPC, EDQUOT, EFBIG), here or in what caused it."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return True
        e = e.__cause__ or e.__context__
    return False
