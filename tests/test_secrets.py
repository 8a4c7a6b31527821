"""anoncam.secrets.read_secret: a systemd credential, then a file named in the config, then an environment
variable; absent sources are skipped, broken ones are errors, and no message ever holds the secret."""
import logging
import os
import subprocess
import sys

import pytest
from anoncam.secrets import MAX_BYTES, SecretError, read_secret

SECRET = "s3cr3t-h0rse-battery"


@pytest.fixture
def creds(tmp_path):
    """A credentials directory as systemd makes it for LoadCredential=mqtt_password (mode 0400)."""
    d = tmp_path / "credentials"
    d.mkdir()
    (d / "mqtt_password").write_text(SECRET + "\n")
    (d / "mqtt_password").chmod(0o400)
    return d


def test_nothing_asked_is_none():
    assert read_secret() is None


def test_credential_wins(creds, tmp_path):
    f = tmp_path / "pw"
    f.write_text("from-file\n")
    env = {"CREDENTIALS_DIRECTORY": str(creds), "PW": "from-env"}
    assert read_secret(file=f, credential="mqtt_password", env="PW", environ=env) == SECRET


def test_file_when_no_credential(tmp_path):
    f = tmp_path / "pw"
    f.write_text("from-file\r\n")
    assert read_secret(file=f, credential="mqtt_password", environ={}) == "from-file"
    f.chmod(0o600)
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path / "empty")}
    assert read_secret(file=f, credential="mqtt_password", environ=env) == "from-file"


def test_multiline_secret_keeps_inner_newlines(tmp_path):
    key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"
    (tmp_path / "owner.pem").write_text(key + "\n\n")
    assert read_secret(file=tmp_path / "owner.pem") == key


def test_env_last(tmp_path):
    assert read_secret(file=tmp_path / "missing", env="ANONCAM_MQTT_PASSWORD",
                       environ={"ANONCAM_MQTT_PASSWORD": "from-env\n"}) == "from-env"


def test_not_found_names_every_place(tmp_path):
    with pytest.raises(SecretError) as e:
        read_secret(file=tmp_path / "pw", credential="mqtt_password", env="ANONCAM_MQTT_PASSWORD", environ={})
    msg = str(e.value)
    assert "credential 'mqtt_password' ($CREDENTIALS_DIRECTORY is not set: add LoadCredential=mqtt_password" \
        in msg
    assert f"file {tmp_path / 'pw'} (missing)" in msg and "ANONCAM_MQTT_PASSWORD (not set)" in msg


@pytest.mark.parametrize("content, error", [
    (b"\n", "is empty"),
    (b"\xff\xfe\x00bad", "is not UTF-8 text"),
    (b"x" * (MAX_BYTES + 1), "is larger than"),
])
def test_broken_file_is_an_error_not_a_fallback(tmp_path, content, error):
    f = tmp_path / "pw"
    f.write_bytes(content)
    with pytest.raises(SecretError, match=error):
        read_secret(file=f, env="PW", environ={"PW": "would-be-fallback"})


def test_directory_and_bad_names(tmp_path):
    with pytest.raises(SecretError, match="is not a regular file"):
        read_secret(file=tmp_path)
    for bad in ("", "../etc/shadow", "a/b", ".."):
        with pytest.raises(SecretError, match="not a plain file name"):
            read_secret(credential=bad, environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})


def test_empty_env_is_an_error():
    with pytest.raises(SecretError, match="environment variable PW is empty"):
        read_secret(env="PW", environ={"PW": ""})


def test_world_readable_file_warns_without_the_secret(tmp_path, caplog):
    f = tmp_path / "pw"
    f.write_text(SECRET)
    f.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="anoncam.secrets"):
        assert read_secret(file=f) == SECRET
    assert "readable by every user" in caplog.text and SECRET not in caplog.text
    caplog.clear()
    f.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="anoncam.secrets"):
        read_secret(file=f)
    assert caplog.text == ""


def test_under_a_real_process_environment(creds):
    """As the service sees it: CREDENTIALS_DIRECTORY in the environment of a fresh process."""
    env = dict(os.environ, CREDENTIALS_DIRECTORY=str(creds))
    code = "from anoncam.secrets import read_secret; print(len(read_secret(credential='mqtt_password')))"
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert p.returncode == 0 and p.stdout.strip() == str(len(SECRET)), p.stderr


def test_mqtt_password_from_the_systemd_credential(tmp_path, monkeypatch):
    """The MQTT client reads its password through read_secret: the unit's LoadCredential=mqtt_password
    works with no password_file in the config, and wins over the environment."""
    from anoncam.config import validate
    from anoncam.mqtt.client import read_password
    d = tmp_path / "creds"
    d.mkdir()
    (d / "mqtt_password").write_text("from-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(d))
    monkeypatch.setenv("ANONCAM_MQTT_PASSWORD", "from-env")
    assert read_password(validate({"mqtt": {"username": "cam"}}).mqtt) == "from-credential"
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    assert read_password(validate({"mqtt": {"username": "cam"}}).mqtt) == "from-env"
