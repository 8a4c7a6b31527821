"""The daemon: the camera source through the frame loop (anoncam/loop.py) into the sinks, until the
source ends, max_frames, or SIGINT/SIGTERM; MQTT commands are applied between frames.

Stop is bounded: SIGTERM interrupts a waiting source, the frame in hand is finished, the disk sink
closes its segment, the other sinks get what is left of runtime.stop_timeout_s; a timer ends the
process at stop_timeout_s whatever still runs (the open segment is crash-safe, see sinks/disk.py)."""
from __future__ import annotations

import logging
import os
import resource
import signal
import sys
import threading
import time

from . import seal
from .capture import open_source
from .config import Config
from .control import Control
from .loop import FrameLoop
from .pipeline import Pipeline
from .sinks import Sink
from .sinks.disk import DiskSink
from .stats import Stats

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
        # an owner public key: every anonymized face's original region is sealed beside the media
        self.recipient = seal.owner_recipient(cfg)
        self.pipeline = pipeline or Pipeline.from_config(cfg, seal.policy_for(cfg) if self.recipient else None)
        self.source = open_source(cfg.camera)
        self.sinks: list[Sink] = sinks if sinks is not None else [DiskSink(
            cfg.output, cfg.camera.name, self.source.fps, self.recipient, cfg.privacy.video_crf)]
        # the live budget applies; a failing sink is logged and counted, the camera goes on
        self.loop = FrameLoop(self.pipeline, self.sinks, keep_going=True)
        self.stats = self.loop.stats
        self.stop_event = threading.Event()
        self._hard_stop = False
        self.on_frame = self.loop.on_frame  # (result, stats) after the sinks, e.g. the systemd watchdog
        self.loop.before_frame = self._between_frames
        self.loop.output_on = lambda: self.output_enabled
        # what may change at run time (output on/off, method), from MQTT commands; applied between frames
        self.control = Control(cfg, self.pipeline)
        if cfg.mqtt.enabled and sinks is None:
            from .mqtt.sink import MqttSink
            mqtt = MqttSink(cfg, self.control)
            self.sinks.append(mqtt)
            self.on_frame.append(mqtt.on_frame)

    def stop(self, *_args) -> None:
        """SIGTERM/SIGINT (or a caller): end the run within runtime.stop_timeout_s."""
        if self.stop_event.is_set():
            return
        self.stop_event.set()
        self._stop_deadline = time.monotonic() + self.cfg.runtime.stop_timeout_s
        interrupt = getattr(self.source, "interrupt", None)
        if interrupt is not None:
            interrupt()  # a live source waiting for its camera returns now
        if self._hard_stop:
            t = threading.Timer(self.cfg.runtime.stop_timeout_s, self._stop_overdue)
            t.daemon = True
            t.start()

    def _stop_overdue(self) -> None:
        # straight to stderr: a logging handler's lock may be held by the thread that hangs
        msg = f"anoncam: stop took longer than runtime.stop_timeout_s ({self.cfg.runtime.stop_timeout_s:g} s): exiting now\n"
        try:
            os.write(2, msg.encode())
        except OSError:
            pass
        os._exit(0)

    def _close_sinks(self) -> None:
        """The disk sink first (it finishes the segment); the others within what is left of the budget."""
        deadline = getattr(self, "_stop_deadline", None)
        for sink in sorted(self.sinks, key=lambda s: not isinstance(s, DiskSink)):
            left = None if deadline is None else deadline - time.monotonic()
            if isinstance(sink, DiskSink) or left is None:
                self._close(sink)
                continue
            t = threading.Thread(target=self._close, args=(sink,), name="sink-close", daemon=True)
            t.start()
            t.join(max(0.0, left - 0.5))
            if t.is_alive():
                log.warning("closing %s cut short by runtime.stop_timeout_s", type(sink).__name__)

    @staticmethod
    def _close(sink) -> None:
        try:
            sink.close()
        except Exception as e:
            log.error("closing sink %s failed: %s", type(sink).__name__, e)

    @property
    def output_enabled(self) -> bool:
        """False pauses every sink; frames are still read and anonymized."""
        return self.control.enabled

    def _apply_commands(self) -> None:
        self.control.apply_pending()

    def _between_frames(self) -> None:
        self._apply_commands()
        if time.monotonic() - self._last_summary >= self.cfg.log.summary_every_s:
            self._last_summary = time.monotonic()
            log.info("%s", self.stats.line(), extra={"data": self.stats.summary()})

    def run(self, max_frames: int | None = None) -> Stats:
        no_core_dumps()
        main = threading.current_thread() is threading.main_thread()
        self._hard_stop = main  # the process is ours to end only when run from the main thread
        old = {s: signal.signal(s, self.stop) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
        self._last_summary = time.monotonic()
        log.info("running: source=%s method=%s output=%s", self.cfg.camera.source, self.cfg.anonymize.method,
                 self.cfg.output.dir)
        try:
            self.loop.run(self.source, max_frames, self.stop_event)
        finally:
            self._close_sinks()
            self.source.close()
            for s, h in old.items():
                signal.signal(s, h)
        log.info("stopped: %s", self.stats.line(), extra={"data": self.stats.summary()})
        print(self.stats.line(), file=sys.stderr)
        return self.stats
