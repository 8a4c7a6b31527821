"""paho-mqtt 2.x client set-up: login, TLS, last will, reconnect backoff, and the first connection,
checked so that a refused login or a bad certificate stops start-up with a clear message."""
from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ..config import MqttConfig
from ..secrets import SecretError, read_secret

log = logging.getLogger(__name__)
PASSWORD_ENV = "ANONCAM_MQTT_PASSWORD"
CREDENTIAL = "mqtt_password"  # LoadCredential=mqtt_password:... in systemd/anoncam.service
# CONNACK reasons that retrying cannot fix: unsupported protocol, client id, login, not authorized, banned
FATAL_CONNACK = {132, 133, 134, 135, 138, 140}


class MqttError(RuntimeError):
    """The MQTT uplink cannot start (bad credentials, TLS files or certificates)."""


def read_password(cfg: MqttConfig) -> str | None:
    """The broker password, by secrets.read_secret: the systemd credential `mqtt_password`, then
    mqtt.password_file, then ANONCAM_MQTT_PASSWORD."""
    if cfg.username is None:
        if cfg.password_file is not None:
            raise MqttError("mqtt.password_file is set but mqtt.username is not: set both or neither "
                            "(the user name may also come from --mqtt mqtt://user@host)")
        if os.environ.get(PASSWORD_ENV):
            log.warning("%s is set but mqtt.username is not; no login is used", PASSWORD_ENV)
        return None
    try:
        secret = read_secret(file=cfg.password_file, credential=CREDENTIAL, env=PASSWORD_ENV)
        return secret.splitlines()[0]  # a password is one line
    except SecretError as e:
        raise MqttError(f"mqtt.username is set but there is no password ({e}): name a file in "
                        f"mqtt.password_file, pass the systemd credential {CREDENTIAL!r} or set the "
                        f"{PASSWORD_ENV} environment variable") from None


def _tls(client: mqtt.Client, cfg: MqttConfig) -> None:
    t = cfg.tls
    for key in ("ca", "cert", "key"):
        path = getattr(t, key)
        if path is not None and not Path(path).is_file():
            raise MqttError(f"mqtt.tls.{key}: {path}: no such file")
    try:
        client.tls_set(ca_certs=str(t.ca) if t.ca else None, certfile=str(t.cert) if t.cert else None,
                       keyfile=str(t.key) if t.key else None,
                       cert_reqs=ssl.CERT_NONE if t.insecure else ssl.CERT_REQUIRED)
    except (ssl.SSLError, OSError, ValueError) as e:
        raise MqttError(f"mqtt.tls: cannot load the CA, certificate or key: {e}") from None
    if t.insecure:
        client.tls_insecure_set(True)
        log.warning("mqtt.tls.insecure: the broker's certificate is NOT checked")


def make_client(cfg: MqttConfig, client_id: str, will_topic: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True,
                    protocol=mqtt.MQTTv311)
    c.enable_logger(logging.getLogger("anoncam.mqtt.paho"))
    c.suppress_exceptions = True  # an exception in a callback is logged, the network thread lives on
    if cfg.username is not None:
        c.username_pw_set(cfg.username, read_password(cfg))
    if cfg.tls.enabled:
        _tls(c, cfg)
    c.will_set(will_topic, "offline", qos=1, retain=True)
    c.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)
    return c


def first_connect(client: mqtt.Client, cfg: MqttConfig) -> bool:
    """Connect and start paho's network thread. False when the broker is unreachable for now (paho
    keeps retrying with backoff); TLS failures raise MqttError."""
    where = f"{cfg.host}:{cfg.port}"
    ok = True
    try:
        client.connect(cfg.host, cfg.port, cfg.keepalive)
    except ssl.SSLError as e:
        why = f"certificate verify failed: {e.verify_message}" if isinstance(e, ssl.SSLCertVerificationError) else e
        raise MqttError(f"mqtt: TLS with {where} failed: {why} "
                        f"(check mqtt.tls.ca, mqtt.tls.cert, mqtt.tls.key and mqtt.host)") from None
    except OSError as e:
        log.warning("mqtt: broker %s unreachable (%s); events and snapshots go to the spool, retrying",
                    where, e.strerror or e)
        client.connect_async(cfg.host, cfg.port, cfg.keepalive)
        ok = False
    client.loop_start()
    return ok


def refused_message(cfg: MqttConfig, reason) -> str:
    who = f" as {cfg.username!r}" if cfg.username else " without a login"
    return (f"mqtt: broker {cfg.host}:{cfg.port} refused the connection{who}: {reason} "
            f"(check mqtt.username and the password in mqtt.password_file or {PASSWORD_ENV})")
