"""`anoncam anonymize`: images, directories and videos to anonymized files.

One input file and an output path with an extension: exactly that file is written, of the same kind.
Otherwise the output is a folder and each input keeps its name. A video keeps its frame count and
frame rate: a frame that fails is written fully covered, never skipped and never raw. Nothing is
left under an output name unless it was completely written. Frames go through the frame loop
(anoncam/loop.py) from a capture source into a file sink (ImageFileSink, VideoFileSink).
"""
from __future__ import annotations

import errno
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .capture import IMAGE_EXT, VIDEO_EXT, SourceError
from .capture.files import VideoFileSource, still
from .loop import FrameLoop
from .pipeline import Pipeline
from .sinks.files import ImageFileSink, VideoFileSink
from .stats import Stats

log = logging.getLogger(__name__)


class InputError(ValueError):
    pass


@dataclass
class Report:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)


def kind_of(path: Path) -> str | None:
    ext = path.suffix.lower()
    return "image" if ext in IMAGE_EXT else "video" if ext in VIDEO_EXT else None


def plan(inputs: list[Path], output: Path) -> list[tuple[Path, Path]]:
    """Pair every input file with its output path."""
    for p in inputs:
        if not p.exists():
            raise InputError(f"{p}: no such file or directory")
    if len(inputs) == 1 and inputs[0].is_file() and output.suffix and not output.is_dir():
        src = inputs[0]
        if kind_of(src) is None:
            raise InputError(f"{src}: not an image or video file")
        if kind_of(output) != kind_of(src):
            raise InputError(f"{output}: output must be a {kind_of(src)} file like the input")
        return _checked([(src, output)])
    pairs = []
    for p in inputs:
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and kind_of(f):
                    pairs.append((f, output / p.name / f.relative_to(p)))
        elif kind_of(p):
            pairs.append((p, output / p.name))
        else:
            raise InputError(f"{p}: not an image or video file")
    if not pairs:
        raise InputError("no image or video files in the inputs")
    return _checked(pairs)


def _checked(pairs: list[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
    """Refuse an output that is an input (however spelled: another path, a symlink, a hard link: an
    original is never overwritten) and check that the output folders can be made and written before any
    work (nothing is created here: the sinks make them, 0750, when they write, so a run that stops at
    start-up, e.g. on a broken model file, leaves nothing behind)."""
    for src, dst in pairs:
        if dst.exists() and (dst.is_dir() or os.path.samefile(src, dst)):
            why = "is a folder" if dst.is_dir() else f"is the input {src} (an original is never overwritten)"
            raise InputError(f"{dst}: {why}")
    for parent in sorted({dst.parent for _, dst in pairs}):
        here = parent
        while not here.exists() and here.parent != here:  # the nearest folder that exists
            here = here.parent
        try:
            if not here.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, f"{here} is not a folder")
            with tempfile.TemporaryFile(dir=here):  # writable (root may "access" /proc but not write it)
                pass
        except OSError as e:
            raise InputError(f"output folder {parent}: cannot write there: {e.strerror or e}") from None
    return pairs


def anonymize_image(pipe: Pipeline, src: Path, dst: Path, stats: Stats, quality: int = 92,
                    recipient=None) -> None:
    """`recipient`: the owner's public key; DST.age then holds the sealed original faces."""
    out = ImageFileSink(dst, quality, recipient)
    # an unreadable file is an error for this file (read_image raises), not a dropped frame
    FrameLoop(pipe, [out], live=False, still=True, stats=stats).run(still(src))
    if out.dropped is not None:
        raise ValueError(f"{src}: dropped ({out.dropped})")


def anonymize_video(pipe: Pipeline, src: Path, dst: Path, stats: Stats, progress: bool = True,
                    read_ahead: bool = False, recipient=None) -> None:
    """`read_ahead`: decode and detect in a second thread, a few frames ahead."""
    # with read-ahead both cores are busy already: one decoder thread costs less CPU than FFmpeg's pool
    source = VideoFileSource(src, threads=1 if read_ahead else None)
    try:
        out = VideoFileSink(dst, source.native_fps, source.size, pipe.cfg.anonymize.solid_color, recipient,
                            pipe.cfg.privacy.video_crf)
        loop = FrameLoop(pipe, [out], live=False, read_ahead=read_ahead, stats=stats)
        bar = tqdm(total=source.frame_count or None, desc=src.name, unit="f", disable=not progress, leave=False)
        loop.on_frame.append(lambda result, stats: bar.update())
        try:
            loop.run(source)
        except BaseException:
            out.abort()
            raise
        finally:
            bar.close()
        out.close()
    finally:
        source.close()


def anonymize_paths(pipe: Pipeline, inputs: list[Path], output: Path, progress: bool = True,
                    read_ahead: bool = False, recipient=None) -> Report:
    report = Report()
    pairs = plan(inputs, output)
    for src, dst in tqdm(pairs, desc="files", unit="file", disable=not progress or len(pairs) < 2):
        try:
            if kind_of(src) == "image":
                anonymize_image(pipe, src, dst, report.stats, recipient=recipient)
            else:
                anonymize_video(pipe, src, dst, report.stats, progress, read_ahead, recipient)
            report.written.append(dst)
        except (OSError, ValueError, SourceError) as e:
            log.error("%s", e)
            report.failed.append((src, str(e)))
    return report
