"""What may change while the camera runs: output on/off (`enabled`), MQTT snapshots on/off and the
anonymization method. MQTT commands use it today; a web page can use the same calls later.

Any thread may ask for a change (`request`, `set_method`, `pause`, ...): it is checked at once and
applied by the frame loop between frames (`apply_pending`), so the pipeline never changes mid-frame.
The config object is never edited: Control holds the effective values. A change is saved to
<output.dir>/<camera>/settings.json and applied again at the next start, as long as the config still
says what it said when the change was made (editing the config file, or --method, wins).
"""
from __future__ import annotations

import json
import logging
import queue
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import registry
from .config import Config
from .sinks.files import write_atomic

log = logging.getLogger(__name__)
SETTINGS = ("enabled", "method", "snapshots")
SETTINGS_FILE = "settings.json"


@dataclass
class Change:
    """A request the frame loop has handled: the value asked for, before and after, or why it failed."""
    setting: str
    requested: object
    old: object
    new: object
    error: str | None = None


def available_methods() -> list[str]:
    """The methods of the one registry (anoncam/registry.py; reading names imports no method)."""
    return list(registry.names())


def use_method(pipeline, name: str) -> None:
    """Switch a pipeline's method (raises if it cannot load; never turns anonymization off)."""
    pipeline.anonymizer.method_fn(name)
    if not hasattr(pipeline.policy, "method"):
        raise RuntimeError(f"the {type(pipeline.policy).__name__} policy has no method to switch")
    pipeline.policy.method = name


class Control:
    def __init__(self, cfg: Config, pipeline=None, state_dir: Path | None = None,
                 methods: list[str] | None = None):
        """`pipeline`: the one whose method changes (None: the value is only recorded). `methods`:
        the choices (default: what the method registry has)."""
        self.methods = list(methods) if methods is not None else available_methods()
        self._pipeline = pipeline
        self.path = Path(state_dir or Path(cfg.output.dir) / cfg.camera.name) / SETTINGS_FILE
        self.configured = {"enabled": True, "method": cfg.anonymize.method, "snapshots": cfg.mqtt.snapshot.enabled}
        self._values = dict(self.configured)
        self._saved: dict[str, dict] = {}
        self._pending: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()
        self._listeners: list[Callable[[Change], None]] = []
        self._load()

    # reading ----------------------------------------------------------------------------------
    def state(self) -> dict:
        return dict(self._values)

    @property
    def enabled(self) -> bool:
        return self._values["enabled"]

    @property
    def method(self) -> str:
        return self._values["method"]

    @property
    def snapshots(self) -> bool:
        return self._values["snapshots"]

    def subscribe(self, fn: Callable[[Change], None]) -> None:
        """fn(change) runs on the frame loop after every handled request, failed ones included."""
        self._listeners.append(fn)

    # asking (any thread) ----------------------------------------------------------------------
    def request(self, setting: str, value) -> None:
        """Queue a change; ValueError (nothing queued) if the setting or value is not valid."""
        self._check(setting, value)
        self._pending.put((setting, value))

    def set_method(self, name: str) -> None:
        self.request("method", name)

    def pause(self) -> None:
        self.request("enabled", False)

    def resume(self) -> None:
        self.request("enabled", True)

    def set_snapshots(self, on: bool) -> None:
        self.request("snapshots", on)

    def _check(self, setting: str, value) -> None:
        if setting == "method":
            if value not in self.methods:
                raise ValueError(f"unknown method {str(value)[:40]!r}; available: {', '.join(self.methods)}")
        elif setting in SETTINGS:
            if not isinstance(value, bool):
                raise ValueError(f"{setting} takes true or false, got {str(value)[:40]!r}")
        else:
            raise ValueError(f"unknown setting {str(setting)[:40]!r}; settings: {', '.join(SETTINGS)}")

    # applying (frame loop) --------------------------------------------------------------------
    def apply_pending(self) -> None:
        while True:
            try:
                setting, value = self._pending.get_nowait()
            except queue.Empty:
                return
            old, error = self._values[setting], None
            try:
                self._set(setting, value)
                log.info("setting %s=%s", setting, value)
                self._save(setting)
            except Exception as e:
                error = str(e) or type(e).__name__
                log.error("setting %s=%s failed: %s", setting, value, error)
            change = Change(setting, value, old, self._values[setting], error)
            for fn in self._listeners:
                try:
                    fn(change)
                except Exception as e:
                    log.error("a listener of %s failed: %s: %s", setting, type(e).__name__, e)

    def _set(self, setting: str, value) -> None:
        if setting == "method" and self._pipeline is not None:
            use_method(self._pipeline, value)
        self._values[setting] = value

    # the settings file ------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            saved = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            log.warning("%s: cannot read (%s); the config's settings apply", self.path, e)
            return
        for setting, entry in (saved if isinstance(saved, dict) else {}).items():
            try:
                value, configured = entry["value"], entry["configured"]
                self._check(setting, value)
            except (TypeError, KeyError, ValueError) as e:
                log.warning("%s: %s ignored: %s", self.path, setting, e)
                continue
            if configured != self.configured[setting]:
                log.info("%s: %s=%s dropped: the config now says %s", self.path, setting, value,
                         self.configured[setting])
                continue
            try:
                self._set(setting, value)
            except Exception as e:
                log.warning("%s: %s=%s cannot be applied (%s); %s is used", self.path, setting, value, e,
                            self.configured[setting])
                continue
            self._saved[setting] = entry
            log.info("setting %s=%s (saved at run time; the config says %s)", setting, value, configured)

    def _save(self, setting: str) -> None:
        value = self._values[setting]
        if value == self.configured[setting]:
            self._saved.pop(setting, None)
        else:
            self._saved[setting] = {"value": value, "configured": self.configured[setting]}
        try:
            write_atomic(self.path, json.dumps(self._saved, indent=1).encode())
        except OSError as e:
            log.error("%s: cannot save the settings (%s); %s=%s holds until the process stops",
                      self.path, e, setting, value)
