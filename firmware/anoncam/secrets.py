"""Secrets (the MQTT password, later owner keys): never on the command line or in the config itself.

read_secret() looks, in this order, at
  1. a systemd credential: $CREDENTIALS_DIRECTORY/<name>, put there by LoadCredential= in the unit;
  2. a file named in the config (mode 0600 or 0640, owned by root or the service user);
  3. an environment variable (for development; a unit's Environment= is visible in `systemctl show`).
The first one that exists wins. Error messages name where a secret was looked for, never its value.
"""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

MAX_BYTES = 1 << 20  # systemd's own limit for all credentials of a unit


class SecretError(RuntimeError):
    """A secret was asked for but is missing, empty or unreadable."""


def read_secret(file: str | Path | None = None, credential: str | None = None, env: str | None = None,
                environ=None) -> str | None:
    """Return the secret text without its trailing newline, or None when no source is given.

    A source that is absent (credential not passed, file missing, variable unset) is skipped; one that
    exists but cannot be used (unreadable, empty, too large, not UTF-8) is an error.
    """
    environ = os.environ if environ is None else environ
    if file is None and credential is None and env is None:
        return None
    tried = []
    if credential is not None:
        if not credential or "/" in credential or credential in (".", ".."):
            raise SecretError(f"credential name {credential!r} is not a plain file name")
        cred_dir = environ.get("CREDENTIALS_DIRECTORY")
        if cred_dir:
            path = Path(cred_dir) / credential
            if path.exists():
                return _read(path, f"credential {credential!r}")
            tried.append(f"credential {credential!r} (not in {cred_dir})")
        else:
            tried.append(f"credential {credential!r} ($CREDENTIALS_DIRECTORY is not set: "
                         f"add LoadCredential={credential} to the unit)")
    if file is not None:
        path = Path(file)
        if path.exists():
            _check_mode(path)
            return _read(path, f"secret file {path}")
        tried.append(f"file {path} (missing)")
    if env is not None:
        value = environ.get(env)
        if value is not None:
            value = value.rstrip("\r\n")
            if not value:
                raise SecretError(f"environment variable {env} is empty")
            return value
        tried.append(f"environment variable {env} (not set)")
    raise SecretError("secret not found; looked at: " + "; ".join(tried))


def _read(path: Path, what: str) -> str:
    if not path.is_file():
        raise SecretError(f"{what}: {path} is not a regular file")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise SecretError(f"{what}: cannot read {path}: {e.strerror}") from None
    if len(data) > MAX_BYTES:
        raise SecretError(f"{what}: {path} is larger than {MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise SecretError(f"{what}: {path} is not UTF-8 text") from None
    if not text:
        raise SecretError(f"{what}: {path} is empty")
    return text


def _check_mode(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & stat.S_IROTH:
        log.warning("secret file %s is readable by every user: chmod 600 (or 640 root:anoncam) it", path)
