"""Owner keys: an age X25519 key pair made on the owner's computer; the camera holds only the public key.

OWNER_KEY is the age identity (AGE-SECRET-KEY-1...) encrypted with the owner's passphrase (an age
scrypt file, armored), so `age -d -i OWNER_KEY` opens the camera's sidecars too (it asks for the
passphrase). OWNER_KEY.pub holds the public key (age1...). The passphrase comes from a file,
ANONCAM_OWNER_PASSPHRASE or a prompt; never from the command line.
"""
from __future__ import annotations

import getpass
import hashlib
import os
import time
from pathlib import Path

import pyrage

PASSPHRASE_ENV = "ANONCAM_OWNER_PASSPHRASE"
AGE_HEADER = b"age-encryption.org/"
AGE_ARMOR = b"-----BEGIN AGE ENCRYPTED FILE-----"
SECRET_PREFIX = "AGE-SECRET-KEY-"


class OwnerKeyError(ValueError):
    """A key or passphrase is missing, malformed, wrong, or a private key was given to the camera."""


def passphrase(file: str | Path | None = None, confirm: bool = False) -> str:
    """From `file` (first line), else $ANONCAM_OWNER_PASSPHRASE, else a prompt on the terminal."""
    if file is not None:
        try:
            text = Path(file).read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise OwnerKeyError(f"cannot read the passphrase file {file}: {e}") from None
        if not text or not text[0]:
            raise OwnerKeyError(f"the passphrase file {file} is empty")
        return text[0]
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value.rstrip("\r\n")
    try:
        pw = getpass.getpass("owner key passphrase: ")
        if confirm and getpass.getpass("again: ") != pw:
            raise OwnerKeyError("the passphrases differ")
    except EOFError:
        raise OwnerKeyError(f"no passphrase: give --passphrase-file, set {PASSPHRASE_ENV} or run on a "
                            "terminal") from None
    if not pw:
        raise OwnerKeyError("empty passphrase")
    return pw


def init(path: str | Path, pw: str, force: bool = False) -> str:
    """Write a new key pair: `path` (mode 0600, passphrase-protected) and `path`.pub. Returns the public key."""
    path = Path(path)
    pub = path.with_name(path.name + ".pub")
    if not force and (path.exists() or pub.exists()):
        raise OwnerKeyError(f"{path} or {pub} exists already; not overwritten")
    ident = pyrage.x25519.Identity.generate()
    sealed = pyrage.passphrase.encrypt((str(ident) + "\n").encode(), pw, armored=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(sealed)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    public = str(ident.to_public())
    pub.write_text(public + "\n")
    return public


def load_identity(path: str | Path, pw: str | None = None):
    """The owner's private key from OWNER_KEY (passphrase-protected) or a plain age identity file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise OwnerKeyError(f"cannot read the owner key {path}: {e.strerror}") from None
    if data.startswith(AGE_HEADER) or data.startswith(AGE_ARMOR):
        if pw is None:
            raise OwnerKeyError(f"{path} is passphrase-protected: a passphrase is needed")
        data = _open_sealed_key(path, data, pw)
    for line in data.decode("utf-8", "replace").splitlines():
        if line.startswith(SECRET_PREFIX):
            try:
                return pyrage.x25519.Identity.from_str(line.strip())
            except pyrage.IdentityError:
                break
    raise OwnerKeyError(f"{path}: not an owner key (no age X25519 identity in it)")


DECRYPT_TRIES = 3
REFUSED_S = 0.2  # a failure this fast ran no real scrypt (a key's factor takes ~1 s where it was made)


def _open_sealed_key(path: Path, data: bytes, pw: str) -> bytes:
    """The identity inside a passphrase-protected OWNER_KEY. age (rage) times one small scrypt run to
    guess this machine's speed and refuses, before any real work and with the same error as a wrong
    passphrase, a file whose work factor is more than 4 above its guess; on a loaded machine one slow
    timing is enough. Such a quick refusal is tried again; a wrong passphrase (a full scrypt) is not."""
    for _ in range(DECRYPT_TRIES):
        start = time.monotonic()
        try:
            return pyrage.passphrase.decrypt(data, pw)
        except pyrage.DecryptError:
            if time.monotonic() - start > REFUSED_S:
                break
    factor = scrypt_work_factor(data)
    raise OwnerKeyError(f"{path}: wrong passphrase (or not an owner key; or its scrypt work factor "
                        f"{factor if factor is not None else '?'} is more than this computer accepts: age "
                        "allows about 16 s of work, so a key made on a much faster computer may open "
                        "only there)")


def scrypt_work_factor(data: bytes) -> int | None:
    """log2(N) of the scrypt stanza of a passphrase-protected age file (armored or binary)."""
    import base64
    import re
    try:
        if data.startswith(AGE_ARMOR):
            body = b"".join(ln for ln in data.splitlines()[1:] if not ln.startswith(b"-----"))
            data = base64.b64decode(body)
        m = re.search(rb"\n-> scrypt \S+ (\d+)\n", data[:1024])
        return int(m.group(1)) if m else None
    except ValueError:
        return None


def looks_private(text: str) -> bool:
    t = text.strip()
    return SECRET_PREFIX in t.upper() or t.encode().startswith((AGE_HEADER, AGE_ARMOR))


def recipient(value: str | Path):
    """The camera's public key from `value`: the key itself (age1...) or a file holding it. A private
    key (plain or passphrase-protected) is refused."""
    text, where = str(value).strip(), "the owner public key"
    if not text.startswith("age1"):
        path = Path(text)
        try:
            text, where = path.read_text().strip(), str(path)
        except (OSError, UnicodeDecodeError) as e:
            if isinstance(e, UnicodeDecodeError) or path.exists():
                raise OwnerKeyError(f"{path}: cannot read the owner public key") from None
            raise OwnerKeyError(f"{path}: no such file, and not an age public key (age1...)") from None
    if looks_private(text):
        raise OwnerKeyError(f"{where} holds a private key: the camera takes only the public key "
                            "(OWNER_KEY.pub, age1...); keep OWNER_KEY on the owner's computer")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    try:
        return pyrage.x25519.Recipient.from_str(lines[0] if len(lines) == 1 else "")
    except pyrage.RecipientError:
        raise OwnerKeyError(f"{where}: not an age X25519 public key (age1...)") from None


def identity_key(data: bytes) -> bytes:
    """The 32-byte key of the generative method's synthetic identities, from a key file's bytes."""
    if not data:
        raise OwnerKeyError("the identity key file is empty")
    return hashlib.sha256(b"anoncam identity key v1\0" + data).digest()


def owner_recipient(cfg):
    """The owner's public key of `privacy.owner_public_key` (None: no sealing); a private key is refused."""
    v = cfg.privacy.owner_public_key
    return None if v is None else recipient(v)
