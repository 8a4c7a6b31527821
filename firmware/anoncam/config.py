"""Configuration: YAML validated with pydantic; unknown keys are rejected with their path and file."""
from __future__ import annotations

import codecs
import json
import math
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import registry

# Bounds on config input (hostile or broken files must cost nothing and fail with a clear error)
MAX_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_ZONES = 64
MAX_ZONE_POINTS = 256
MAX_COORD = 65536.0

Method = Literal[registry.names()]  # blur, pixelate, solid, generative (anoncam/registry.py)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CameraConfig(Strict):
    name: str = Field("cam0", pattern=r"^[A-Za-z0-9_-]+$", description="Camera id used in file names and topics.")
    source: str = Field("sample:franck", description=(
        "sample:NAME (fetched sample clip), an image/video file or directory, a device index (0), "
        "an rtsp:// or http:// URL, gst:PIPELINE, or picamera2."))
    loop: bool = Field(True, description="Loop file sources forever (the demo camera).")
    realtime: bool = Field(True, description="Pace file sources at their own frame rate, as a live camera.")
    fps: float | None = Field(None, gt=0, description="Pace file sources at this rate instead (implies realtime).")
    width: int | None = Field(None, gt=0, description="Requested capture width (devices, picamera2).")
    height: int | None = Field(None, gt=0, description="Requested capture height (devices, picamera2).")
    lores_width: int = Field(320, gt=0, description="picamera2: width of the lores stream used for detection.")
    read_timeout_s: float = Field(10.0, gt=0, le=300, description=(
        "URL cameras: opening or reading longer than this gives up and reconnects (with backoff)."))


class DetectConfig(Strict):
    model: Literal["yunet"] = Field("yunet", description=(
        "Detector in models/manifest.yaml; the pipeline decodes YuNet's outputs, so yunet is the one."))
    min_face: int = Field(24, ge=8, le=4096, description=(
        "Stills: every face at least this many pixels across (box long side) is looked for, whatever the "
        "image size (a pyramid of scales and tiles; cost grows with (image pixels) / min_face^2)."))
    video_min_face: int = Field(40, ge=8, le=4096, description=(
        "Video and live frames: the same, per detected frame. Raise it to trade recall on tiny faces for "
        "speed (e.g. 80 on a 1080p stream: a quarter of the detector work)."))
    tile: int = Field(960, ge=128, le=4096, description=(
        "Largest detector input (px, square); bigger levels of the pyramid are cut into tiles of this size."))
    score_threshold: float = Field(0.6, gt=0, lt=1)
    nms_threshold: float = Field(0.3, gt=0, lt=1)
    every_n: int = Field(1, ge=1, description="Run the detector every Nth frame; track in between.")


class LandmarksConfig(Strict):
    enabled: bool = Field(True, description="Dense FaceMesh landmarks for a face-shaped mask.")
    model: Literal["facemesh"] = Field("facemesh", description="Dense landmark model in models/manifest.yaml.")
    min_face: int = Field(24, ge=8, description="Faces smaller than this (px) use the ellipse mask.")
    score_threshold: float = Field(0.5, gt=0, lt=1)


class TrackConfig(Strict):
    iou_threshold: float = Field(0.2, gt=0, lt=1)
    coast_frames: int = Field(15, ge=10, description="Frames a lost face stays covered at its predicted box.")
    coast_grow: float = Field(0.08, ge=0, le=0.5, description="Box growth per coasted frame (fraction of size).")


class AnonymizeConfig(Strict):
    method: Method = Field("blur", description=(
        "How faces are anonymized. blur (default), pixelate, solid: cover only. `generative`: a synthetic "
        "identity per tracked person that keeps pose, expression, lighting, age and gender; not the "
        "default until its realism targets hold (README, Realism)."))
    mask_scale: float = Field(1.4, ge=1.0, le=2.5, description=(
        "Grow the face mask about its centre. The covered extent decides privacy: ORL re-ID with blur "
        "3.9 % at 1.25, 1.9 % at 1.4 (README, Evaluation)."))
    feather: float = Field(0.12, ge=0, le=0.5, description="Mask edge softness, fraction of face size.")
    solid_color: tuple[int, int, int] = Field((40, 40, 40), description="BGR fill for `solid` and zones.")
    blur_sigma: float = Field(0.22, gt=0, le=1, description="Blur sigma as a fraction of face size.")
    pixelate_blocks: int = Field(8, ge=3, le=32, description="Blocks across the face for `pixelate`.")
    generative_min_face: int = Field(40, ge=8, description=(
        "`generative`: faces smaller than this (px, face oval) are pixelated instead."))
    generative_mask_scale: float = Field(1.4, ge=1.0, le=2.5, description=(
        "`generative`: mask_scale for generated faces (ORL re-ID 6.1 % at 1.25, about 4 % at 1.4)."))
    generative_net: bool = Field(False, description=(
        "`generative`: render with the trained network (models/generator/generator.onnx). Off: the "
        "identity warped and recoloured without the network, which measured better privacy with the "
        "current weights (models/generator/CARD.md)."))
    privacy_zones: list[list[tuple[float, float]]] = Field(default_factory=list, description=(
        "Polygons always covered with solid_color. Points in pixels, or in 0..1 of the frame if all <= 1."))

    @field_validator("privacy_zones")
    @classmethod
    def _zones(cls, v):
        if len(v) > MAX_ZONES:
            raise ValueError(f"at most {MAX_ZONES} privacy zones")
        for poly in v:
            if not 3 <= len(poly) <= MAX_ZONE_POINTS:
                raise ValueError(f"a privacy zone needs 3 to {MAX_ZONE_POINTS} points")
            if any(not math.isfinite(c) or abs(c) > MAX_COORD for p in poly for c in p):
                raise ValueError(f"privacy zone points must be finite and within +-{MAX_COORD} px")
        return v


class FailsafeConfig(Strict):
    budget_ms: float = Field(1000.0, gt=0, description="A frame whose detect+anonymize takes longer fails closed.")
    on_failure: Literal["cover", "drop"] = Field("cover", description="Fully cover or drop a failed frame.")


class StillsConfig(Strict):
    enabled: bool = True
    every_s: float = Field(5.0, gt=0, description="At most one JPEG still every this many seconds of video.")
    quality: int = Field(90, ge=10, le=100)


class VideoConfig(Strict):
    enabled: bool = True
    segment_s: float = Field(60.0, gt=0, description="Length of one video segment in seconds of video.")
    fourcc: str = Field("mp4v", min_length=4, max_length=4)
    extension: Literal[".mp4", ".m4v", ".mov", ".mkv", ".avi"] = Field(".mp4", description=(
        "Video container of the segments."))


class RetentionConfig(Strict):
    max_bytes: int = Field(2_000_000_000, gt=0, description="Delete oldest output beyond this total size.")
    max_age_h: float | None = Field(168.0, gt=0, description="Delete output older than this; null keeps all.")
    min_free_bytes: int = Field(200_000_000, ge=0, description="Delete oldest output while free space is lower.")


class OutputConfig(Strict):
    dir: Path = Field(Path("out"), description="Where anonymized stills and video segments go.")
    stills: StillsConfig = StillsConfig()
    video: VideoConfig = VideoConfig()
    retention: RetentionConfig = RetentionConfig()


class RuntimeConfig(Strict):
    threads: int = Field(2, ge=1, le=64, description="Threads per inference session.")
    onnx_providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"], description=(
        "onnxruntime execution providers in order of preference, e.g. TensorrtExecutionProvider, "
        "CUDAExecutionProvider on Jetson. Missing ones are skipped with a warning."))
    litert_delegate: Literal["none", "edgetpu"] = Field("none", description="LiteRT delegate for .tflite models.")
    precision: Literal["auto", "int8", "fp32"] = Field("auto", description=(
        "ONNX models (detector; generator with generative_net). auto: per model, whichever of int8 and "
        "fp32 ran faster on this CPU when `anoncam models quantize` built the int8 file (recorded next "
        "to it). int8: the int8 file. fp32: the fp32 file. The runtime never builds models: a missing or "
        "rejected int8 file runs fp32 with a warning; one that does not match its recorded sha256 stops "
        "start-up (exit 3)."))
    detector_tflite: Path | None = Field(None, description=(
        "A YuNet TFLite (full-integer from `make tflite`, or a compiled *_edgetpu.tflite) to run the "
        "detector on LiteRT instead of onnxruntime; with litert_delegate: edgetpu it runs on the Edge TPU."))
    detector_tflite_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description=(
        "sha256 of runtime.detector_tflite; when set, a file with another sha256 stops start-up (exit 3)."))
    stop_timeout_s: float = Field(5.0, gt=0, le=600, description=(
        "`anoncam run`: SIGTERM/SIGINT ends the process within this long in any camera state (the open "
        "segment finished first; what is left waiting, e.g. MQTT delivery, is cut short)."))


class LogConfig(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"
    summary_every_s: float = Field(5.0, gt=0, description="Seconds between summary lines.")


class MqttTlsConfig(Strict):
    enabled: bool = Field(False, description="Connect over TLS (the broker's port is usually 8883).")
    ca: Path | None = Field(None, description="CA certificate file; the system CAs when null.")
    cert: Path | None = Field(None, description="Client certificate file (set with `key`).")
    key: Path | None = Field(None, description="Client private key file (set with `cert`).")
    insecure: bool = Field(False, description="Do not check the broker's certificate or host name (testing only).")

    @model_validator(mode="after")
    def _pair(self):
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together: set both or neither")
        return self


class MqttSnapshotConfig(Strict):
    enabled: bool = Field(True, description="Publish anonymized JPEG snapshots.")
    every_s: float = Field(1.0, ge=0, description="At most one snapshot every this many seconds (0: every frame).")
    max_width: int = Field(640, ge=32, description="Wider snapshots are scaled down to this width.")
    quality: int = Field(80, ge=10, le=100, description="JPEG quality.")


class MqttSpoolConfig(Strict):
    dir: Path | None = Field(None, description=(
        "Where events and snapshots wait while the broker is unreachable; null: <output.dir>/<camera>/mqtt-spool."))
    max_bytes: int = Field(50_000_000, gt=0, description="Spool size cap; the oldest messages are dropped first.")


class MqttDiscoveryConfig(Strict):
    enabled: bool = Field(True, description="Publish Home Assistant MQTT discovery (retained).")
    prefix: str = Field("homeassistant", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")


class MqttConfig(Strict):
    enabled: bool = Field(False, description="Publish to an MQTT broker (`anoncam run --mqtt URL` turns it on).")
    host: str = Field("localhost", min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    client_id: str | None = Field(None, description="MQTT client id; null: anoncam-<camera>.")
    prefix: str = Field("anoncam", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$", description="Topic prefix.")
    username: str | None = Field(None, description="Login name; the password comes from password_file or "
                                 "the ANONCAM_MQTT_PASSWORD environment variable, never from the command line.")
    password_file: Path | None = Field(None, description="File holding the password (first line).")
    tls: MqttTlsConfig = MqttTlsConfig()
    qos: int = Field(1, ge=0, le=2, description="QoS of events and snapshots (store-and-forward needs 1 or 2).")
    keepalive: int = Field(30, ge=5, le=3600, description="Seconds; the broker publishes the last will after 1.5x.")
    reconnect_min_s: float = Field(1.0, gt=0, description="First reconnect delay; doubles up to reconnect_max_s.")
    reconnect_max_s: float = Field(30.0, gt=0)
    queue_size: int = Field(256, ge=8, description="Messages waiting between the camera loop and the network; "
                            "beyond it messages are dropped and counted.")
    stats_every_s: float = Field(10.0, gt=0, description="Seconds between stats messages.")
    event_update_every_s: float = Field(1.0, ge=0, description="At most one update event per face track this "
                                        "often (0: every frame).")
    commands: bool = Field(True, description="Accept <prefix>/<camera>/<setting>/set commands.")
    close_timeout_s: float = Field(10.0, ge=0, description="On stop, wait this long to deliver what is queued.")
    snapshot: MqttSnapshotConfig = MqttSnapshotConfig()
    spool: MqttSpoolConfig = MqttSpoolConfig()
    discovery: MqttDiscoveryConfig = MqttDiscoveryConfig()

    @model_validator(mode="after")
    def _check(self):
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        return self


class PrivacyConfig(Strict):
    owner_public_key: str | None = Field(None, description=(
        "The owner's age public key (age1...) or a file holding it (`anoncam keys init` writes "
        "OWNER_KEY.pub). Set: the original pixels of every anonymized face are sealed to it in a "
        "sidecar beside each still and video segment (`anoncam reveal` restores them). Never a private key."))
    video_crf: int = Field(17, ge=0, le=51, description=(
        "Quality of the sealed face stream of video (x264 CRF, 4:4:4, preset medium; 0 lossless, 17 keeps "
        "every sealed region >= 40 dB PSNR in bench/seal_bench.py)."))

    @field_validator("owner_public_key")
    @classmethod
    def _public_only(cls, v):
        from .keys import looks_private
        if v is not None and looks_private(v):
            raise ValueError("holds a private key: the camera takes only the public key (age1... or "
                             "the OWNER_KEY.pub file)")
        return v


class ConsentConfig(Strict):
    enabled: bool = Field(False, description=(
        "Enrolled people (`anoncam enroll`) stay visible once the camera is sure it is them; everyone "
        "else is anonymized. `--gallery FILE` on run/anonymize turns it on."))
    gallery: Path | None = Field(None, description=(
        "The consent gallery (embeddings and consent dates, mode 0600); null: "
        "<output.dir>/<camera>/consent.json."))
    k: int = Field(2, ge=1, le=100, description="Video: consecutive matching detected frames before a track is shown.")
    threshold: float = Field(0.73, gt=0, lt=1, description=(
        "Video: FaceRes cosine a match needs (FaceRes scores unlike faces ~0.4, not ~0.1 as SFace)."))
    margin: float = Field(0.05, ge=0, lt=1, description="Video: FaceRes cosine margin over the next enrolled person.")
    still_threshold: float = Field(0.5, gt=0, lt=1, description="Stills (one match): SFace cosine a match needs.")
    still_margin: float = Field(0.1, ge=0, lt=1, description="Stills: SFace margin over the next enrolled person.")
    recheck_every: int = Field(20, ge=1, le=100, description=(
        "An exempt track is matched again every this many detected frames (1: every one); the size "
        "and position checks run on every frame. A recheck not in after twice this covers the face."))
    max_size_change: float = Field(0.25, gt=0, lt=1, description=(
        "A box whose long side changes by more than this fraction between detected frames starts over."))
    max_move: float = Field(0.5, gt=0, le=5, description=(
        "A box whose centre moves by more than this fraction of its long side between detected frames "
        "starts over."))
    near: float = Field(0.5, gt=0, le=5, description=(
        "A track whose box comes within this fraction of its long side of another face's box (this "
        "frame or the last) starts over: where faces meet the tracker can swap them."))
    worker: bool = Field(True, description=(
        "Video: the embedding runs in a worker thread beside the frame loop (the loop only crops); a "
        "face stays anonymized until its K matches are in. false: in the loop (stills always are)."))
    publish_names: bool = Field(False, description="MQTT: the exempt event carries the enrolled name.")
    key_credential: str | None = Field(None, description=(
        "Encrypt the gallery (age) with the identity in this systemd credential (LoadCredential=)."))
    key_file: Path | None = Field(None, description=(
        "Encrypt the gallery with the identity in this file (mode 0600); the credential wins."))


class Config(Strict):
    camera: CameraConfig = CameraConfig()
    detect: DetectConfig = DetectConfig()
    landmarks: LandmarksConfig = LandmarksConfig()
    track: TrackConfig = TrackConfig()
    anonymize: AnonymizeConfig = AnonymizeConfig()
    failsafe: FailsafeConfig = FailsafeConfig()
    output: OutputConfig = OutputConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    log: LogConfig = LogConfig()
    mqtt: MqttConfig = MqttConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    consent: ConsentConfig = ConsentConfig()


class ConfigError(ValueError):
    """The config file cannot be read or does not validate; the message names file and key."""


def _format_errors(err: ValidationError, where: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key '{key}'")
        else:
            lines.append(f"{where}: '{key}': {e['msg']}")
    return "\n".join(lines)


def validate(data: dict, where: str = "config") -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of sections")
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, where)) from None


class _StrictLoader(yaml.SafeLoader):
    """YAML for configs: no anchors or aliases (an alias bomb costs nothing to write and gigabytes to
    expand), no duplicate keys (the later one would silently win), nesting at most MAX_DEPTH deep."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent) or getattr(self.peek_event(), "anchor", None):
            raise yaml.constructor.ConstructorError(None, None, "anchors and aliases (&, *) are not allowed "
                                                    "in a config", self.peek_event().start_mark)
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.constructor.ConstructorError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                                        self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _text(path: Path, raw: bytes) -> str:
    """UTF-8 (with or without a BOM), or UTF-16/32 with a BOM; anything else is an error."""
    for bom, enc in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                     (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if raw.startswith(bom):
            break
    else:
        enc = "utf-8"
    try:
        return raw.decode(enc)
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not {enc.upper()} text (byte {e.start}); save the config as UTF-8") from None


def load(path: str | Path | None) -> Config:
    if path is None:
        return Config()
    path = Path(path)
    try:
        if not path.is_file():
            raise ConfigError(f"{path}: not a file")
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_BYTES} bytes; a config is a few kB")
    text = _text(path, raw)
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply") from None
    except (ValueError, OverflowError) as e:  # PyYAML's own: an escape like "\UFFFFFFFF" past Unicode
        raise ConfigError(f"{path}: not valid YAML: {type(e).__name__}: {e}") from None
    return validate(data, str(path))


def override(cfg: Config, **dotted) -> Config:
    """Return a copy with dotted keys replaced (e.g. {'camera.source': 'x.mp4'}), validated again."""
    data = cfg.model_dump(mode="json")
    for key, value in dotted.items():
        if value is None:
            continue
        node = data
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return validate(data, "command line")


def schema_json() -> str:
    return json.dumps(Config.model_json_schema(), indent=2)
