"""Fuzzing at the camera's boundaries (issue 17.7), with hypothesis: prints cases/s and failures.

1. config: random YAML documents (keys from the schema and made up, values of every type, nested,
   mutated, re-encoded, or plain random bytes) -> anoncam.config.load gives a Config or a ConfigError
   naming the file (and the key, for a document that parses), never another exception;
2. commands: random topics (long, unicode, wildcards) and payloads into the MQTT command handler with a
   real Control -> refused cleanly (bounded echo) or applied;
3. images: real JPEG and PNG bytes (the astronaut at 96 px) cut, flipped, spliced or random ->
   read_image gives a picture or a ValueError;
4. video: a real MP4 (cap13, 10 frames at 96x72) mutated the same way -> VideoFileSource raises
   SourceError or yields frames (or None for undecodable ones) and ends;
5. spool: a folder of MQTT spool files (good, mutated, random, stray names) -> the spool opens, hands
   out only readable messages, sets the rest aside and ends empty.

A case that runs longer than HANG_S seconds kills the run with a traceback (faulthandler), whatever
it hangs in (Python, YAML, FFmpeg). tests/test_fuzz.py runs the same targets on 200 cases each.

    python bench/fuzz.py [--cases 10000] [--only config,commands,images,video,spool]
"""
from __future__ import annotations

import argparse
import faulthandler
import itertools
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's complaints about damaged files: quiet
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
import cv2  # noqa: E402
import numpy as np
import yaml
from anoncam.capture import SourceError
from anoncam.capture.files import VideoFileSource, read_image
from anoncam.config import Config, ConfigError, load, validate
from anoncam.control import SETTINGS, Control
from anoncam.mqtt.commands import ECHO, CommandDispatcher
from anoncam.mqtt.spool import Spool
from anoncam.mqtt.topics import Topics
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

HANG_S = 30
MAX_FRAMES = 1000  # the fuzzed clip has 10 frames: a reader that yields this many does not end
BASE = "anoncam/cam0"


# --- inputs ---------------------------------------------------------------------------------------
def _paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of the config schema."""
    out = []
    for name, f in model.model_fields.items():
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += [f"{prefix}{name}", *_paths(ann, f"{prefix}{name}.")]
        else:
            out.append(f"{prefix}{name}")
    return out


KEYS = _paths(Config)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.integers(-5, 2000),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
                    st.sampled_from(["blur", "solid", "yunet", "facemesh", ".mp4", "auto", "int8", "0", "",
                                     "ON", "/dev/null", "/proc/self/mem", "sample:cap13", "1e300", "-1"]))
values = st.recursive(scalars, lambda v: st.one_of(st.lists(v, max_size=6),
                                                   st.dictionaries(st.text(max_size=12), v, max_size=4)),
                      max_leaves=20)


@st.composite
def config_docs(draw) -> bytes:
    """A config file's bytes: a document of schema and made-up keys, sometimes mutated, re-encoded or
    replaced by random bytes."""
    kind = draw(st.sampled_from(["doc", "doc", "doc", "mutated", "utf16", "bytes", "yamlish"]))
    if kind == "bytes":
        return draw(st.binary(max_size=2000))
    if kind == "yamlish":
        return draw(st.text(alphabet=" \n\t:-[]{}&*!|>'\"#,?%@`abcz019.eE+\\UuxF", max_size=400)).encode()
    doc: dict = {}
    for key, value in draw(st.lists(st.tuples(st.one_of(st.sampled_from(KEYS), st.text(max_size=20)), values),
                                    max_size=8)):
        node, parts = doc, key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {}) if isinstance(node.get(p, {}), dict) else {}
        node[parts[-1]] = value
    text = yaml.safe_dump(draw(st.one_of(st.just(doc), values)), allow_unicode=True)
    if kind == "utf16":
        return text.encode("utf-16")
    data = text.encode()
    return mutate(data, draw(edits)) if kind == "mutated" else data


edits = st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "delete", "splice"]),
                           st.integers(0, 2**31), st.binary(min_size=1, max_size=16)), max_size=4)


def mutate(data: bytes, ops) -> bytes:
    """Apply edits (kind, position, bytes) to data; positions wrap around its length."""
    b = bytearray(data)
    for kind, pos, chunk in ops:
        i = pos % (len(b) + 1)
        if kind == "flip" and b:
            b[i % len(b)] ^= chunk[0] or 0xFF
        elif kind == "cut":
            del b[i:]
        elif kind == "insert":
            b[i:i] = chunk
        elif kind == "delete":
            del b[i:i + len(chunk)]
        else:  # splice: trailing data, as a motion photo's
            b += chunk * (pos % 64 + 1)
    return bytes(b)


topics = st.one_of(
    st.builds(lambda s: f"{BASE}/{s}/set", st.one_of(st.sampled_from([*SETTINGS, "volume", "", "+", "#"]),
                                                     st.text(max_size=80))),
    st.builds(lambda n: f"{BASE}/{'x' * n}/set", st.integers(60, 70_000)),
    st.text(max_size=120))
payloads = st.one_of(st.sampled_from([b"ON", b"off", b" On \n", b"blur", b"solid", b"pixelate", b"generative",
                                      b"", b"\xff\xfe", b"BLUR; rm -rf /"]),
                     st.binary(max_size=600), st.text(max_size=300).map(str.encode),
                     st.integers(0, 70_000).map(lambda n: b"y" * n))


def real_inputs(media: dict, folder: Path) -> dict[str, bytes]:
    """Small real files to mutate: the astronaut as JPEG and PNG at 96 px, a 10-frame MP4 of cap13."""
    img = cv2.resize(cv2.imread(str(media["astronaut"])), (96, 96), interpolation=cv2.INTER_AREA)
    out = {"jpg": cv2.imencode(".jpg", img)[1].tobytes(), "png": cv2.imencode(".png", img)[1].tobytes()}
    cap, clip = cv2.VideoCapture(str(media["cap13"])), folder / "clip.mp4"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 72))
    for _ in range(10):
        ok, frame = cap.read()
        w.write(cv2.resize(frame, (96, 72), interpolation=cv2.INTER_AREA))
    w.release()
    cap.release()
    out["mp4"] = clip.read_bytes()
    return out


# --- targets: one case each; an AssertionError or any unexpected exception is a failure ----------------
QUOTED = re.compile(r"'[^']+'")
NOT_ABOUT_A_KEY = ("not valid YAML", "not UTF", "larger than", "nested", "top level", "not a file")


def check_config(folder: Path, data: bytes) -> str:
    path = folder / "camera.yaml"
    path.write_bytes(data)
    try:
        cfg = load(path)
    except ConfigError as e:
        msg = str(e)
        assert str(path) in msg, f"the error does not name the file: {msg[:300]}"
        assert QUOTED.search(msg) or any(w in msg for w in NOT_ABOUT_A_KEY), f"names no key: {msg[:300]}"
        return "refused"
    assert isinstance(cfg, Config)
    return "accepted"


class Commands:
    """The command handler with a real Control (its settings file in `folder`); a clock that moves a
    second per command keeps the rate limit out of the way (it has its own test)."""

    def __init__(self, folder: Path):
        self.control = Control(validate({}), state_dir=folder, methods=["blur", "pixelate", "solid"])
        self.errors: list[tuple] = []
        clock = itertools.count(0.0, 1.0)
        self.d = CommandDispatcher(Topics("anoncam", "cam0"), self.control, lambda *a, **k: self.errors.append(a))
        self.d.clock = lambda: next(clock)

    def check(self, topic: str, payload: bytes) -> str:
        self.errors.clear()
        handled = self.d.handle(topic, payload)
        self.control.apply_pending()
        for setting, text, why in self.errors:
            assert len(setting) <= ECHO + 3 and len(text) <= ECHO + 3 and len(why) <= 203, "echo unbounded"
        state = self.control.state()
        assert state["method"] in self.control.methods and isinstance(state["enabled"], bool)
        if not handled:
            return "ignored"
        return "refused" if self.errors else "applied"


def check_spool(folder: Path, files: list[tuple[str, bytes]]) -> str:
    """A spool folder holding random files (some named like messages, some real messages): it opens,
    hands out only readable messages, sets the others aside, and ends empty."""
    d = folder / "spool"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    for name, data in files:
        (d / name).write_bytes(data)
    s = Spool(d, max_bytes=1_000_000)
    sent = 0
    while (item := s.next_unsent()) is not None:
        name, topic, payload, retain = item
        assert isinstance(topic, str) and topic and isinstance(payload, bytes) and isinstance(retain, bool)
        s.done(name)
        sent += 1
    assert len(s) == 0 and not list(d.glob("[0-9]*.msg")), "a message is left that was never handed out"
    return "sent" if sent else "none"


def check_image(folder: Path, data: bytes) -> str:
    path = folder / "in.img"
    path.write_bytes(data)
    try:
        img = read_image(path)
    except ValueError:
        return "refused"
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.size > 0
    return "read"


def check_video(folder: Path, data: bytes) -> str:
    path = folder / "in.mp4"
    path.write_bytes(data)
    try:
        src = VideoFileSource(path, threads=1)
    except SourceError:
        return "refused"
    try:
        n = 0
        for f in src:
            assert f.image is None or (f.image.ndim == 3 and f.image.shape[2] == 3)
            n += 1
            assert n <= MAX_FRAMES, "the reader does not end"
    finally:
        src.close()
    return "read"


# --- runner ---------------------------------------------------------------------------------------
def strategy(name: str, inputs: dict[str, bytes]):
    if name == "config":
        return st.tuples(config_docs())
    if name == "commands":  # about half the cases are valid commands
        onoff = st.tuples(st.sampled_from([f"{BASE}/enabled/set", f"{BASE}/snapshots/set"]),
                          st.sampled_from([b"ON", b"OFF", b"on", b" off\n"]))
        method = st.tuples(st.just(f"{BASE}/method/set"), st.sampled_from([b"blur", b"solid", b"pixelate"]))
        anything = st.tuples(topics, payloads)
        return st.integers(0, 99).flatmap(lambda k: onoff if k < 25 else method if k < 50 else anything)
    if name == "spool":  # message files (good, mutated, random) and stray names
        good = st.builds(lambda t, p, r: json.dumps({"topic": t, "retain": r}).encode() + b"\n" + p,
                         st.text(min_size=1, max_size=30), st.binary(max_size=50), st.booleans())
        body = st.one_of(good, st.builds(mutate, good, edits), st.binary(max_size=200))
        names = st.one_of(st.integers(0, 10**12 - 1).map(lambda i: f"{i:012d}.msg"),
                          st.sampled_from(["notes.txt", "abc.msg", ".x.msg.tmp", "000000000001.msg.bad"]))
        return st.tuples(st.lists(st.tuples(names, body), max_size=6, unique_by=lambda f: f[0]))
    kinds = ["jpg", "png"] if name == "images" else ["mp4"]
    real = st.builds(lambda k, ops: mutate(inputs[k], ops), st.sampled_from(kinds), edits)
    return st.tuples(st.one_of(real, real, real, st.binary(max_size=4000)))


def target(name: str, folder: Path):
    if name == "commands":
        return Commands(folder).check
    fn = {"config": check_config, "images": check_image, "video": check_video, "spool": check_spool}[name]
    return lambda data: fn(folder, data)


def run(name: str, cases: int, inputs: dict[str, bytes], folder: Path, derandomize: bool = False,
        keep_going: bool = True) -> dict:
    """Run `cases` generated cases of one target. keep_going: count failures and go on (the bench);
    otherwise the first failure raises (hypothesis then shrinks it; the tests)."""
    check, outcomes, failures = target(name, folder), {}, []

    @settings(max_examples=cases, deadline=None, database=None, derandomize=derandomize,
              suppress_health_check=list(HealthCheck),
              phases=[Phase.generate] if keep_going else [Phase.generate, Phase.shrink])
    @given(strategy(name, inputs))
    def body(args):
        faulthandler.dump_traceback_later(HANG_S, exit=True, file=sys.stdout)
        try:
            got = check(*args)
            outcomes[got] = outcomes.get(got, 0) + 1
        except Exception as e:  # noqa: BLE001 -- every other exception is what the fuzzing looks for
            if not keep_going:
                raise
            failures.append(f"{type(e).__name__}: {str(e)[:200]} <- {repr(args)[:200]}")
        finally:
            faulthandler.cancel_dump_traceback_later()

    t = time.perf_counter()
    body()
    dt = time.perf_counter() - t
    n = sum(outcomes.values()) + len(failures)
    return {"target": name, "cases": n, "seconds": round(dt, 1), "cases_per_s": round(n / dt, 1),
            "outcomes": outcomes, "failures": len(failures), "examples": failures[:5]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--only", default="config,commands,images,video,spool")
    a = ap.parse_args()
    from anoncam import assets
    media = {n: assets.fetch(m) for n, m in assets.load_manifest("media").items() if n in ("astronaut", "cap13")}
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        # libjpeg, libpng and FFmpeg complain about every damaged file on fd 2: into a file instead
        noise = os.open(Path(tmp) / "stderr.log", os.O_WRONLY | os.O_CREAT)
        os.dup2(noise, 2)
        inputs = real_inputs(media, Path(tmp))
        print(f"inputs: jpg {len(inputs['jpg'])} B, png {len(inputs['png'])} B, mp4 {len(inputs['mp4'])} B")
        for name in a.only.split(","):
            r = run(name, a.cases, inputs, Path(tmp))
            bad += r["failures"]
            print(f"{name:9} {r['cases']:6d} cases in {r['seconds']:7.1f} s = {r['cases_per_s']:8.1f} cases/s, "
                  f"failures {r['failures']}, outcomes {r['outcomes']}", flush=True)
            for ex in r["examples"]:
                print("   ", ex)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
