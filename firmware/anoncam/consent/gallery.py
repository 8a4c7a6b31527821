"""The consent gallery: per enrolled person, per enrolled face an SFace embedding (stills, duplicate
checks) and a FaceRes one (video tracks), and the date of consent, never photos.

One JSON file, mode 0600, written atomically. Its header names the embedding models (manifest names
and sha256, FaceRes's input size): a gallery from other models is refused (enroll again), as is a
corrupt or group/world-readable file.

Optionally encrypted: with `consent.key_credential` (a systemd credential) or `consent.key_file`
holding an age X25519 identity (AGE-SECRET-KEY-1..., `anoncam consent keygen`), the file is age
(X25519 + ChaCha20-Poly1305) encrypted to that identity; without the key it cannot be read, and a
wrong key or an altered file is refused. With a key configured a plain-text gallery is refused too
(`anoncam consent encrypt` converts one).
"""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import stat
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyrage

from .. import assets
from ..secrets import SecretError, read_secret

FORMAT = "anoncam-consent-gallery"
VERSION = 1
DIM = 128         # SFace
VIDEO_DIM = 1024  # FaceRes
FILE_NAME = "consent.json"
AGE_MAGIC = b"age-encryption.org/"
MAX_BYTES = 64 << 20


class GalleryError(RuntimeError):
    """The gallery cannot be used; the message names the file and why."""


def model_id() -> dict:
    from .faceres import SIZE
    m = assets.load_manifest("models")
    return {"name": "sface", "sha256": m["sface"].sha256,
            "video": {"name": "faceres", "sha256": m["faceres"].sha256, "graph_sha256": m["faceres_graph"].sha256,
                      "size": SIZE}}


def default_path(cfg) -> Path:
    """consent.gallery, else consent.json in the camera's state directory (<output.dir>/<camera>)."""
    c = cfg.consent
    return Path(c.gallery) if c.gallery else Path(cfg.output.dir) / cfg.camera.name / FILE_NAME


def gallery_key(cc) -> pyrage.x25519.Identity | None:
    """The age identity from consent.key_credential / consent.key_file, or None (plain text)."""
    if cc.key_credential is None and cc.key_file is None:
        return None
    try:
        text = read_secret(file=cc.key_file, credential=cc.key_credential)
    except SecretError as e:
        raise GalleryError(f"consent gallery key: {e}") from None
    try:
        return pyrage.x25519.Identity.from_str(text.strip())
    except Exception:
        raise GalleryError("consent gallery key: not an age identity (AGE-SECRET-KEY-1...; "
                           "`anoncam consent keygen FILE` makes one)") from None


def open_gallery(cfg, missing_ok: bool = False) -> Gallery:
    """The configured gallery (default_path), decrypted with the configured key if any."""
    return Gallery.load(default_path(cfg), missing_ok, gallery_key(cfg.consent))


@contextmanager
def locked(path: Path):
    """Hold an exclusive lock beside the gallery while it is read, changed and written (enroll,
    revoke from the CLI and from MQTT): a revocation is never lost to a concurrent enrollment."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _unit(rows, dim: int) -> np.ndarray:
    e = np.asarray(rows, np.float32)
    if e.ndim != 2 or e.shape[1] != dim or len(e) == 0 or not np.all(np.isfinite(e)):
        raise ValueError("bad embeddings")
    return e / (np.linalg.norm(e, axis=1, keepdims=True) + 1e-12)


@dataclass
class Person:
    embeddings: np.ndarray  # n x 128 SFace, unit length: stills, duplicate checks
    consented: str          # ISO date
    video: np.ndarray       # n x 1024 FaceRes of the same faces, unit length: video tracks


@dataclass
class Gallery:
    path: Path
    people: dict[str, Person] = field(default_factory=dict)
    key: pyrage.x25519.Identity | None = None  # set: the file is age-encrypted to it

    @classmethod
    def load(cls, path: Path, missing_ok: bool = False, key: pyrage.x25519.Identity | None = None) -> Gallery:
        path = Path(path)
        try:
            st = path.stat()
        except FileNotFoundError:
            if missing_ok:
                return cls(path, key=key)
            raise GalleryError(f"{path}: no consent gallery (anoncam enroll makes one)") from None
        if st.st_mode & 0o077:
            raise GalleryError(f"{path}: mode {stat.S_IMODE(st.st_mode):04o} lets others read it; "
                               "refused (chmod 600)")
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_BYTES + 1)
        except OSError as e:
            raise GalleryError(f"{path}: cannot read the consent gallery ({e.strerror})") from None
        if len(raw) > MAX_BYTES:
            raise GalleryError(f"{path}: larger than {MAX_BYTES >> 20} MB; not a consent gallery")
        if raw.startswith(AGE_MAGIC):
            if key is None:
                raise GalleryError(f"{path}: the consent gallery is encrypted and no key is configured "
                                   "(consent.key_credential or consent.key_file)")
            try:
                raw = pyrage.decrypt(raw, [key])
            except pyrage.DecryptError:
                raise GalleryError(f"{path}: cannot decrypt the consent gallery: wrong key, or the file "
                                   "was altered") from None
        elif key is not None:
            raise GalleryError(f"{path}: the consent gallery is not encrypted but a key is configured; "
                               "refused (`anoncam consent encrypt` encrypts it)")
        try:
            data = json.loads(raw.decode("utf-8"))
        except ValueError as e:
            raise GalleryError(f"{path}: corrupt consent gallery ({type(e).__name__})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
            raise GalleryError(f"{path}: not an anoncam consent gallery (version {VERSION})")
        if data.get("model") != model_id():
            raise GalleryError(f"{path}: made with another embedding model ({_model_name(data)}); this "
                               f"camera uses sface {model_id()['sha256'][:12]} + faceres "
                               f"{model_id()['video']['sha256'][:12]}: enroll the people again")
        g = cls(path, key=key)
        try:
            for name, p in data["people"].items():
                e, v = _unit(p["embeddings"], DIM), _unit(p["video"], VIDEO_DIM)
                if len(v) != len(e):
                    raise ValueError("one video embedding per embedding")
                g.people[str(name)] = Person(e, str(p["consented"]), v)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise GalleryError(f"{path}: corrupt consent gallery (bad person entry)") from None
        return g

    def save(self) -> None:
        data = {"format": FORMAT, "version": VERSION, "model": model_id(),
                "people": {n: {"consented": p.consented,
                               "embeddings": [[round(float(x), 6) for x in row] for row in p.embeddings],
                               "video": [[round(float(x), 5) for x in row] for row in p.video]}
                           for n, p in sorted(self.people.items())}}
        blob = json.dumps(data).encode()
        if self.key is not None:
            blob = pyrage.encrypt(blob, [self.key.to_public()])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.part")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, blob)
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(self.path)

    def revoke(self, name: str) -> bool:
        """Remove `name` and save; False (nothing written) when not enrolled."""
        if name not in self.people:
            return False
        del self.people[name]
        self.save()
        return True

    def add(self, name: str, embeddings: np.ndarray, video: np.ndarray) -> None:
        """`embeddings`: SFace (n x 128); `video`: FaceRes of the same n faces (n x 1024)."""
        self.people[name] = Person(np.asarray(embeddings, np.float32), datetime.date.today().isoformat(),
                                   np.asarray(video, np.float32))

    def scores(self, emb: np.ndarray, video: bool = False) -> list[tuple[float, str]]:
        """Per person, the best cosine of `emb` (SFace, or FaceRes with `video`) to their
        embeddings, highest first."""
        return sorted(((float(np.max((p.video if video else p.embeddings) @ emb)), n)
                       for n, p in self.people.items()), reverse=True)

    def match(self, emb: np.ndarray, video: bool = False) -> tuple[str | None, float, float]:
        """(best person, cosine, margin over the next person or over 0 when alone)."""
        s = self.scores(emb, video)
        if not s:
            return None, 0.0, 0.0
        nxt = max(s[1][0], 0.0) if len(s) > 1 else 0.0
        return s[0][1], s[0][0], s[0][0] - nxt


def _model_name(data: dict) -> str:
    m = data.get("model")
    if isinstance(m, dict):
        v = m.get("video")
        video = f"{v.get('name')} {str(v.get('sha256'))[:12]}" if isinstance(v, dict) else "no video model"
        return f"{m.get('name')} {str(m.get('sha256'))[:12]} + {video}"
    return "none named"


def file_state(path: Path) -> tuple | None:
    """What changes when the gallery is rewritten (atomic replace: a new inode), None when absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode
