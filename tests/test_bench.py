"""`anoncam bench` on a short input: the JSON's documented shape, the reference comparison and the
budget logic (non-zero exit when over budget). Real pipeline, real models, real clip."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from anoncam import bench

SHORT = ["--sizes", "320x240", "--faces", "3", "--precision", "int8", "--threads", "1", "--frames", "6",
         "--warmup", "2", "--method", "generative"]


def _bench(args, env, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "anoncam", "bench", *SHORT, *args], capture_output=True,
                          text=True, env=env, cwd=tmp_path)
    return proc


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, models, media):
    """A short reference profile recorded by `--record-reference`."""
    import os
    tmp = tmp_path_factory.mktemp("bench")
    ref = tmp / "ref.json"
    proc = _bench(["--record-reference", str(ref), "--label", "test reference"], dict(os.environ), tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(ref.read_text())


def _check_run(r):
    assert r["size"] == "320x240" and r["faces"] == 3 and r["precision"] == "int8" and r["threads"] == 1
    assert r["frames"] == 6 and r["fps"] > 0 and r["wall_fps"] > 0
    assert set(r["stages"]) == set(bench.STAGES)
    for s in bench.STAGES:
        q = r["stages"][s]
        assert set(q) == {"p50", "p95", "p99"} and 0 <= q["p50"] <= q["p95"] <= q["p99"]
    e = r["e2e_ms"]
    assert 0 < e["p50"] <= e["p95"] <= e["p99"]
    assert r["stages"]["detect"]["p50"] > 0 and r["stages"]["encode"]["p50"] > 0
    assert 50 < r["peak_rss_mb"] < 4000
    assert 2 <= r["faces_found_mean"] <= 3  # the clip's face + 2 composited (tiles find the rest in turn)
    assert r["detector"]["anoncam.precision"] == "int8"  # what was loaded, not what was asked


def test_record_reference_shape(recorded):
    assert recorded["schema"] == "anoncam-bench/1" and recorded["kind"] == "reference"
    assert recorded["label"] == "test reference" and recorded["machine"]["cores"] >= 1
    assert len(recorded["runs"]) == 1
    _check_run(recorded["runs"][0])


def test_run_compares_and_passes_a_generous_budget(recorded, tmp_path, cli_env):
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps(recorded))
    out = tmp_path / "b.json"
    proc = _bench(["--reference", str(ref), "--out", str(out), "--fps", "0.01", "--budget", "detect=100000"],
                  cli_env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["kind"] == "run" and res["schema"] == "anoncam-bench/1"
    _check_run(res["runs"][0])
    (c,) = res["comparison"]
    assert c["reference_run"] == "320x240 3f int8 t1" and set(c["ratio_p50"]) == set(bench.STAGES) | {"e2e"}
    assert c["ratio_p50"]["e2e"] > 0
    b = res["budget"]
    assert b["pass"] is True and b["interval_ms"] == 100000.0 and len(b["checks"]) == 2
    assert out.with_suffix(".md").read_text().startswith("anoncam bench")
    assert "PASS" in proc.stdout


def test_budget_below_measured_fails_with_nonzero_exit(recorded, tmp_path, cli_env):
    proc = _bench(["--reference", str(tmp_path / "none.json"), "--fps", "0.01", "--budget", "detect=0.0001"],
                  cli_env, tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "OVER" in proc.stdout and "detect p95" in proc.stdout


def test_budget_logic_at_the_measured_value(recorded):
    """Just below the measured latency fails, just above passes (e2e against the frame interval, and a
    per-stage budget), on the recorded runs."""
    runs = recorded["runs"]
    e2e = runs[0]["e2e_ms"]["p95"]
    assert bench.budget(runs, 1000.0 / (e2e * 1.01), "p95", {})["pass"] is True
    assert bench.budget(runs, 1000.0 / (e2e * 0.99), "p95", {})["pass"] is False
    det = runs[0]["stages"]["detect"]["p95"]
    assert bench.budget(runs, 0.01, "p95", {"detect": det * 1.01})["pass"] is True
    assert bench.budget(runs, 0.01, "p95", {"detect": det * 0.99})["pass"] is False


def test_bad_budget_stage_is_an_argument_error(tmp_path, cli_env):
    proc = _bench(["--budget", "nosuchstage=1"], cli_env, tmp_path)
    assert proc.returncode == 2 and "--budget STAGE=MS" in proc.stderr
