"""`anoncam anonymize`: images, directories and videos to anonymized files.

One input file and an output path with an extension: exactly that file is written, of the same kind.
Otherwise the output is a folder and each input keeps its name. A video keeps its frame count and
frame rate: a frame that fails is written fully covered, never skipped and never raw. Nothing is
left under an output name unless it was completely written.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .capture import IMAGE_EXT, VIDEO_EXT
from .capture.files import read_image
from .pipeline import Pipeline
from .sinks.files import VideoFile, encode_image, write_atomic
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
        return [(src, output)]
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
    return pairs


def anonymize_image(pipe: Pipeline, src: Path, dst: Path, stats: Stats, quality: int = 92) -> None:
    img = read_image(src)
    res = pipe.process(img, 0, still=True, live=False)
    stats.frame(res.status, res.timings, len(res.faces))
    if res.image is None:
        raise ValueError(f"{src}: dropped ({res.reason})")
    write_atomic(dst, encode_image(res.image, dst.suffix, quality))


def anonymize_video(pipe: Pipeline, src: Path, dst: Path, stats: Stats, progress: bool = True) -> None:
    cap = cv2.VideoCapture(str(src))
    try:
        if not cap.isOpened():
            raise ValueError(f"{src}: cannot open as video")
        ok, frame = cap.read()
        if not ok or frame is None:
            raise ValueError(f"{src}: no decodable video frames")
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        expected = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        h, w = frame.shape[:2]
        out = VideoFile(dst, fps, (w, h))
        pipe.reset()
        bar = tqdm(total=expected or None, desc=src.name, unit="f", disable=not progress, leave=False)
        i = misses = 0
        try:
            while True:
                if frame is None:
                    ok, frame = cap.read()
                    if not ok:
                        if i >= expected or misses >= 25:
                            break
                        misses += 1  # an undecodable frame inside the stream: keep its place, covered
                        frame = np.zeros((h, w, 3), np.uint8)
                        pipe.anonymizer.cover_all(frame)
                        stats.frame("dropped", {}, 0)
                        out.write(frame)
                        frame = None
                        i += 1
                        bar.update()
                        continue
                res = pipe.process(frame, i, live=False)
                if res.image is None:  # dropped by the failsafe: write it covered to keep the timing
                    pipe.anonymizer.cover_all(frame)
                stats.frame(res.status, res.timings, len(res.faces))
                out.write(frame)
                frame = None
                i += 1
                bar.update()
        except BaseException:
            out.abort()
            raise
        finally:
            bar.close()
        out.commit()
    finally:
        cap.release()


def anonymize_paths(pipe: Pipeline, inputs: list[Path], output: Path, progress: bool = True) -> Report:
    report = Report()
    pairs = plan(inputs, output)
    for src, dst in tqdm(pairs, desc="files", unit="file", disable=not progress or len(pairs) < 2):
        try:
            if kind_of(src) == "image":
                anonymize_image(pipe, src, dst, report.stats)
            else:
                anonymize_video(pipe, src, dst, report.stats, progress)
            report.written.append(dst)
        except (OSError, ValueError) as e:
            log.error("%s", e)
            report.failed.append((src, str(e)))
    return report
