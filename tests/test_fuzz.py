"""Fuzzing in CI (issue 17.7): the targets of bench/fuzz.py (config loader, MQTT command handler,
image and video readers) on 200 derandomized cases each; the first failure fails the test, shrunk by
hypothesis. A case that hangs for 30 s kills the run with a traceback. The 10,000-case runs, with
cases/s, are `python bench/fuzz.py` (figures in the README)."""
from __future__ import annotations

import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import fuzz  # noqa: E402

CASES = 200
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")  # 70,000-character topics


@pytest.fixture(scope="module")
def inputs(media, tmp_path_factory):
    return fuzz.real_inputs(media, tmp_path_factory.mktemp("fuzz-inputs"))


@pytest.mark.parametrize("name", ["config", "commands", "images", "video", "spool"])
def test_fuzz(name, inputs, tmp_path):
    r = fuzz.run(name, CASES, inputs, tmp_path, derandomize=True, keep_going=False)
    assert r["failures"] == 0 and r["cases"] == CASES, r
    assert len(r["outcomes"]) >= 2, f"the cases reach only one outcome: {r['outcomes']}"


def test_fuzz_catches_a_broken_reader(inputs, tmp_path, monkeypatch):
    """The harness fails on an exception other than the clean ones (here: read_image made to raise
    KeyError on PNGs), so a pass above means something."""
    real = fuzz.read_image

    def broken(path):
        if path.read_bytes()[:4] == b"\x89PNG":
            raise KeyError("boom")
        return real(path)

    monkeypatch.setattr(fuzz, "read_image", broken)
    with pytest.raises(KeyError):
        fuzz.run("images", CASES, inputs, tmp_path, derandomize=True, keep_going=False)
