"""Hostile or broken config files cost nothing and end in exit 2 naming the file and the problem
(issue 17.5): aliases, duplicate keys, deep nesting, odd encodings, huge files, absurd coordinates."""
import subprocess
import tracemalloc

import pytest
from anoncam.config import ConfigError, load
from conftest import ANONCAM

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


def write(tmp_path, content, name="cam.yaml"):
    p = tmp_path / name
    (p.write_bytes if isinstance(content, bytes) else p.write_text)(content)
    return p


def refused(tmp_path, content) -> str:
    p = write(tmp_path, content)
    with pytest.raises(ConfigError) as e:
        load(p)
    assert str(p) in str(e.value)
    return str(e.value)


def test_alias_bomb_is_refused_without_expanding_it(tmp_path):
    tracemalloc.start()
    msg = refused(tmp_path, BOMB)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "aliases" in msg and peak < 20_000_000


def test_duplicate_key_is_named(tmp_path):
    assert "duplicate key 'every_s'" in refused(tmp_path, "output:\n  stills: {every_s: 5, every_s: 1}\n")


def test_deep_nesting_is_refused(tmp_path):
    assert "nested deeper" in refused(tmp_path, "camera: " + "[" * 100_000 + "]" * 100_000 + "\n")


def test_encodings(tmp_path):
    text = "camera: {name: door}\n"
    for enc in ("utf-8", "utf-8-sig", "utf-16", "utf-32"):
        assert load(write(tmp_path, text.encode(enc), f"c-{enc}.yaml")).camera.name == "door"
    assert "not UTF-8 text" in refused(tmp_path, b"camera: {name: \xff\xfa}\n")


def test_size_and_coordinates_are_bounded(tmp_path):
    assert "larger than" in refused(tmp_path, "# " + "x" * 300_000 + "\n")
    msg = refused(tmp_path, "anonymize: {privacy_zones: [[[0, 0], [1e300, 0], [0, 1]]]}\n")
    assert "anonymize.privacy_zones" in msg and "finite" in msg
    assert "privacy_zones" in refused(tmp_path, "anonymize: {privacy_zones: [[[0, 0], [.nan, 0], [0, 1]]]}\n")


@pytest.mark.parametrize("content", [BOMB, b"\xff\xfe\x00\xd8", "a: [" * 50 + "]" * 50])
def test_cli_config_check_exits_2(tmp_path, content):
    p = write(tmp_path, content)
    r = subprocess.run([*ANONCAM, "config", "check", str(p)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and str(p) in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("content,key", [("detect: {model: nope}\n", "detect.model"),
                                         ("landmarks: {model: nope}\n", "landmarks.model"),
                                         ("output: {video: {extension: .jpg}}\n", "output.video.extension")])
def test_settings_that_cannot_work_are_refused(tmp_path, content, key):
    assert key in refused(tmp_path, content)
