"""`--mqtt mqtt://[user@]host[:port]` (or mqtts:// for TLS) to config overrides."""
from __future__ import annotations

from urllib.parse import unquote, urlsplit

from ..config import ConfigError


def parse_url(url: str) -> dict:
    """Dotted config overrides for the broker URL. A password in the URL is refused."""
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as e:
        raise ConfigError(f"--mqtt {url!r}: {e}") from None
    if u.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"--mqtt {url!r}: use mqtt://[user@]host[:port] or mqtts://...")
    if u.password is not None:
        raise ConfigError("--mqtt: no password on the command line; put it in the file named by "
                          "mqtt.password_file or in the ANONCAM_MQTT_PASSWORD environment variable")
    if not u.hostname or u.path not in ("", "/") or u.query or u.fragment:
        raise ConfigError(f"--mqtt {url!r}: expected mqtt://[user@]host[:port]")
    tls = u.scheme == "mqtts"
    out = {"mqtt.enabled": True, "mqtt.host": u.hostname, "mqtt.port": port or (8883 if tls else 1883)}
    if tls:
        out["mqtt.tls.enabled"] = True
    if u.username:
        out["mqtt.username"] = unquote(u.username)
    return out
