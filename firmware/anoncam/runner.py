"""The daemon loop: source -> pipeline -> sinks, until the source ends, max_frames, or SIGINT/SIGTERM."""
from __future__ import annotations

import logging
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable

from .capture import open_source
from .config import Config
from .control import Control
from .pipeline import Pipeline
from .sinks import Sink
from .sinks.disk import DiskSink
from .stats import Stats
from .types import FrameResult

log = logging.getLogger(__name__)


def no_core_dumps() -> None:
    """A core dump would hold raw frames: never write one."""
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):
        pass
    # A core_pattern pipe (systemd-coredump, apport) ignores RLIMIT_CORE; a non-dumpable process is
    # never dumped at all (and cannot be ptrace-attached by its own user).
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0
    except (OSError, AttributeError):
        pass


class Runner:
    def __init__(self, cfg: Config, pipeline: Pipeline | None = None, sinks: list[Sink] | None = None):
        self.cfg = cfg
        self.pipeline = pipeline or Pipeline.from_config(cfg)
        self.source = open_source(cfg.camera)
        if hasattr(self.source, "attach"):
            self.source.attach(self.pipeline)
        self.sinks: list[Sink] = sinks if sinks is not None else [DiskSink(cfg.output, cfg.camera.name,
                                                                            self.source.fps)]
        self.stats = Stats()
        self.stop_event = threading.Event()
        self.on_frame: list[Callable[[FrameResult, Stats], None]] = []  # e.g. the systemd watchdog
        self.sink_errors = 0
        # what may change at run time (output on/off, method), from MQTT commands; applied between frames
        self.control = Control(cfg, self.pipeline)
        if cfg.mqtt.enabled and sinks is None:
            from .mqtt.sink import MqttSink
            mqtt = MqttSink(cfg, self.control)
            self.sinks.append(mqtt)
            self.on_frame.append(mqtt.on_frame)

    def stop(self, *_args) -> None:
        self.stop_event.set()

    @property
    def output_enabled(self) -> bool:
        """False pauses every sink; frames are still read and anonymized."""
        return self.control.enabled

    def _apply_commands(self) -> None:
        self.control.apply_pending()

    def run(self, max_frames: int | None = None) -> Stats:
        no_core_dumps()
        old = {s: signal.signal(s, self.stop) for s in (signal.SIGINT, signal.SIGTERM)} \
            if threading.current_thread() is threading.main_thread() else {}
        last_summary = time.monotonic()
        log.info("running: source=%s method=%s output=%s", self.cfg.camera.source, self.cfg.anonymize.method,
                 self.cfg.output.dir)
        it = iter(self.source)
        try:
            while not self.stop_event.is_set():
                self._apply_commands()
                if max_frames is not None and self.stats.counts["frames"] >= max_frames:
                    break
                t = time.perf_counter()
                frame = next(it, None)
                if frame is None:
                    break
                decode_ms = (time.perf_counter() - t - getattr(self.source, "waited_s", 0.0)) * 1000
                if frame.result is not None or getattr(self.source, "anonymizes", False):
                    result = frame.result or FrameResult(frame.index, frame.timestamp, frame.image, "covered")
                    # the source anonymized it; a frame it dropped reaches no sink
                    result.image = None if result.status == "dropped" else frame.image
                elif frame.image is None:
                    log.warning("frame %d dropped: %s", frame.index, frame.error or "unreadable")
                    result = FrameResult(frame.index, frame.timestamp, None, "dropped", reason=frame.error)
                else:
                    result = self.pipeline.process(frame.image, frame.index, frame.timestamp)
                result.timings["decode"] = decode_ms
                t = time.perf_counter()
                for sink in (self.sinks if self.output_enabled else []):
                    try:
                        sink.write(result)
                    except Exception as e:  # a failing sink must not stop the camera
                        self.sink_errors += 1
                        log.error("sink %s failed: %s: %s", type(sink).__name__, type(e).__name__, e)
                result.timings["sinks"] = (time.perf_counter() - t) * 1000
                self.stats.frame(result.status, result.timings, len(result.faces))
                for cb in self.on_frame:
                    cb(result, self.stats)
                if time.monotonic() - last_summary >= self.cfg.log.summary_every_s:
                    last_summary = time.monotonic()
                    log.info("%s", self.stats.line(), extra={"data": self.stats.summary()})
        finally:
            for sink in self.sinks:
                try:
                    sink.close()
                except Exception as e:
                    log.error("closing sink %s failed: %s", type(sink).__name__, e)
            self.source.close()
            for s, h in old.items():
                signal.signal(s, h)
        log.info("stopped: %s", self.stats.line(), extra={"data": self.stats.summary()})
        print(self.stats.line(), file=sys.stderr)
        return self.stats
