"""Owner keys (issue 15): real age keys, real files, the real CLI. Sealed faces restore bit-exact on
stills and at >= 40 dB on video; wrong key, tampered, truncated and swapped sidecars fail by name with
nothing written; the camera refuses a private key; nothing the daemon writes holds original face pixels."""
from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import threading
import time

import cv2
import numpy as np
import pytest
import yaml
from anoncam import keys, seal
from conftest import ANONCAM
from helpers import iter_frames

PW = "correct horse battery staple"


def cli(env, *args, ok=True):
    p = subprocess.run([*ANONCAM, *map(str, args)], env=env, capture_output=True, text=True, timeout=600)
    if ok:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


@pytest.fixture(scope="module")
def owner(tmp_path_factory):
    """Two key pairs made with `anoncam keys init` (the second one is the wrong key)."""
    d = tmp_path_factory.mktemp("keys")
    (d / "pw").write_text(PW + "\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(d)}
    import os
    env.update({k: v for k, v in os.environ.items() if k in ("ANONCAM_CACHE", "PYTHONPATH", "VIRTUAL_ENV")})
    for name in ("owner", "other"):
        p = cli(env, "keys", "init", d / name, "--passphrase-file", d / "pw")
        assert p.stdout.strip() == (d / f"{name}.pub").read_text().strip()
    return d


def group_clip(media, path, frames=36):
    """A video with several faces (several tracks): a group photo panning slowly, lossless (FFV1)."""
    img = cv2.imread(str(media["group1"]))
    img = cv2.resize(img, (720, 480), interpolation=cv2.INTER_AREA)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 12.0, (640, 400))
    for i in range(frames):
        w.write(np.ascontiguousarray(img[40 + i // 3: 440 + i // 3, 20 + 2 * i: 660 + 2 * i]))
    w.release()
    return path


def test_keys_init(owner):
    key = owner / "owner"
    assert key.stat().st_mode & 0o777 == 0o600
    data = key.read_bytes()
    assert b"AGE-SECRET-KEY" not in data.upper() and data.startswith(keys.AGE_ARMOR)
    assert str(keys.recipient(owner / "owner.pub")).startswith("age1")
    ident = keys.load_identity(key, PW)
    assert str(ident.to_public()) == (owner / "owner.pub").read_text().strip()
    with pytest.raises(keys.OwnerKeyError, match="wrong passphrase"):
        keys.load_identity(key, "not it")


def test_key_beyond_this_computers_scrypt_limit(owner, tmp_path):
    """age refuses a work factor far above what it measures this machine can do, with the error of a
    wrong passphrase: the message says so, with the key's factor (here raised to 40 in its header)."""
    import base64
    import re
    data = (owner / "owner").read_bytes()
    assert keys.scrypt_work_factor(data) in range(10, 31)
    raw = base64.b64decode(b"".join(ln for ln in data.splitlines()[1:] if not ln.startswith(b"-----")))
    heavy = tmp_path / "heavy"
    heavy.write_bytes(re.sub(rb"(\n-> scrypt \S+ )\d+\n", rb"\g<1>40\n", raw))
    with pytest.raises(keys.OwnerKeyError, match="work factor 40 is more than this computer accepts"):
        keys.load_identity(heavy, PW)


def test_private_key_refused_by_the_camera(owner, tmp_path, cli_env, media):
    out = tmp_path / "out.png"
    plain = tmp_path / "plain.txt"
    plain.write_text(str(keys.load_identity(owner / "owner", PW)) + "\n")
    for bad in (owner / "owner", plain):
        p = cli(cli_env, "anonymize", media["group1"], "-o", out, "--owner-key", bad, ok=False)
        assert p.returncode == 2 and "private key" in p.stderr, p.stderr
        p = cli(cli_env, "run", "--source", media["group1"], "--output", tmp_path / "o", "--owner-key", bad,
                "--max-frames", "1", ok=False)
        assert p.returncode == 2 and "private key" in p.stderr, p.stderr
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"privacy": {"owner_public_key": plain.read_text().strip()}}))
    p = cli(cli_env, "config", "check", cfg, ok=False)
    assert p.returncode == 2 and "private key" in p.stderr
    assert not out.exists() and not any(f.is_file() for f in (tmp_path / "o").rglob("*"))  # nothing written


@pytest.fixture(scope="module")
def stills(owner, media, tmp_path_factory):
    """group1 and group2 anonymized to PNG with the owner key (lossless media: the whole revealed
    image must equal the original)."""
    d = tmp_path_factory.mktemp("stills")
    import os
    env = dict(os.environ, TMPDIR=str(d))
    for name in ("group1", "group2"):
        cli(env, "anonymize", media[name], "-o", d / f"{name}.png", "--owner-key", owner / "owner.pub",
            "--method", "blur", "-q")
    return d


def reveal(env, owner, *args, key="owner"):
    return cli(env, "reveal", *args, "--key", owner / key, "--passphrase-file", owner / "pw", ok=False)


def test_still_round_trip_bit_exact(owner, stills, media, tmp_path, cli_env):
    out = tmp_path / "r"
    p = reveal(cli_env, owner, stills / "group1.png", stills / "group2.png", "-o", out)
    assert p.returncode == 0, p.stderr
    for name in ("group1", "group2"):
        orig = cv2.imread(str(media[name]))
        anon = cv2.imread(str(stills / f"{name}.png"))
        back = cv2.imread(str(out / f"{name}.png"))
        assert (anon != orig).any(axis=2).sum() > 5000  # faces were covered
        assert np.array_equal(back, orig)  # every covered pixel restored, bit-exact
    # the anonymized originals are untouched
    assert (cv2.imread(str(stills / "group1.png")) != cv2.imread(str(media["group1"]))).any()


def age_with_passphrase(args: list[str], passphrase: str, timeout: float = 120) -> tuple[int, bytes]:
    """Run the stock `age` on a pty (it reads an identity file's passphrase from the terminal), answer
    its prompt; returns (exit status, what it printed on the terminal)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: age, with the pty as its controlling terminal
        os.execvp("age", ["age", *args])
    seen, answered = b"", False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 1024)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if not answered and b"passphrase" in seen.lower():
                os.write(fd, passphrase.encode() + b"\n")
                answered = True
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), seen


def test_stock_age_opens_a_sidecar(owner, stills, tmp_path):
    """Debian's age 1.1 opens a camera sidecar with OWNER_KEY as `keys init` wrote it (passphrase-
    protected), the passphrase typed at its prompt; a wrong passphrase opens nothing."""
    if shutil.which("age") is None:
        pytest.fail("the age CLI is missing (Debian package age)")
    out = tmp_path / "payload"
    code, seen = age_with_passphrase(["-d", "-i", str(owner / "owner"), "-o", str(out),
                                      str(stills / "group1.png.age")], PW)
    assert code == 0 and b"Enter passphrase for identity file" in seen, seen
    header, blobs = seal.unpack(out.read_bytes(), "age output")
    assert header["media_sha256"] == seal.file_sha256(stills / "group1.png") and len(header["faces"]) >= 3
    assert cv2.imdecode(np.frombuffer(blobs[header["faces"][0]["pixels"]], np.uint8), cv2.IMREAD_COLOR) is not None
    bad = tmp_path / "bad"
    code, seen = age_with_passphrase(["-d", "-i", str(owner / "owner"), "-o", str(bad),
                                      str(stills / "group1.png.age")], "not the passphrase")
    assert code != 0 and not (bad.exists() and bad.stat().st_size), seen


def test_sidecar_reveals_nothing_in_clear(stills):
    data = (stills / "group1.png.age").read_bytes()
    assert data.startswith(b"age-encryption.org/v1\n-> X25519 ")
    header = data[:data.index(b"\n--- ")]  # the only clear part: one X25519 stanza (plus age's grease)
    assert header.count(b"\n-> X25519 ") == 1 and b"faces" not in header
    # the payload is ciphertext: none of the format's markers (long enough not to occur by chance)
    for marker in (b'"media_sha256"', b'"faces"', b'"roi"', b"WEBPVP8L", b"\x89PNG\r\n\x1a\n"):
        assert marker not in data


def test_wrong_key(owner, stills, tmp_path, cli_env):
    out = tmp_path / "w.png"
    p = reveal(cli_env, owner, stills / "group1.png", "-o", out, key="other")
    assert p.returncode == 1 and "group1.png.age" in p.stderr and "another owner key" in p.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "tmp"]


@pytest.mark.parametrize("damage", ["tamper", "truncate", "swap"])
def test_damaged_sidecar(owner, stills, tmp_path, cli_env, damage):
    work = tmp_path / "w"
    work.mkdir()
    for f in ("group1.png", "group1.png.age", "group2.png.age"):
        shutil.copy(stills / f, work / f)
    side = work / "group1.png.age"
    data = bytearray(side.read_bytes())
    if damage == "tamper":
        data[len(data) // 2] ^= 0x01
    elif damage == "truncate":
        data = data[:len(data) - 1000]
    else:
        data = bytearray((work / "group2.png.age").read_bytes())
    side.write_bytes(bytes(data))
    out = tmp_path / "o.png"
    p = reveal(cli_env, owner, work / "group1.png", "-o", out)
    assert p.returncode == 1 and "group1.png.age" in p.stderr, p.stderr
    assert ("does not belong" in p.stderr) if damage == "swap" else ("damaged" in p.stderr)
    assert not out.exists() and not any(p.name.startswith(".") for p in tmp_path.iterdir())


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def test_video_round_trip(owner, media, tmp_path, cli_env):
    clip = group_clip(media, tmp_path / "clip.avi")
    anon = tmp_path / "anon.avi"
    cli(cli_env, "anonymize", clip, "-o", anon, "--owner-key", owner / "owner.pub", "--method", "solid", "-q")
    out = tmp_path / "back.mkv"
    p = reveal(cli_env, owner, anon, "-o", out)
    assert p.returncode == 0, p.stderr
    ident = keys.load_identity(owner / "owner", PW)
    header, _ = seal.open_sidecar(anon, ident)
    assert len({f["track"] for f in header["faces"]}) >= 3
    orig, back = list(iter_frames(clip)), list(iter_frames(out))
    assert len(back) == len(orig) == header["frames"]
    cap = cv2.VideoCapture(str(out))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0, rel=1e-3)
    worst = min(psnr(orig[f["frame"]][y0:y1, x0:x1], back[f["frame"]][y0:y1, x0:x1])
                for f in header["faces"] for x0, y0, x1, y1 in [f["roi"]])
    assert worst >= 40.0, worst


def test_daemon_seals_and_writes_no_original_pixels(owner, media, tmp_path, cli_env):
    """Run the daemon on a clip with an owner key; every file it wrote (media, sidecars, TMPDIR) is
    searched for the original pixels of each sealed region (raw rows, the region as PNG and as the
    lossless WebP the sidecars hold)."""
    clip = group_clip(media, tmp_path / "clip.avi", frames=30)
    out = tmp_path / "out"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({
        "camera": {"name": "door"}, "anonymize": {"method": "blur"},
        "output": {"stills": {"every_s": 1.0}, "video": {"segment_s": 1.0}},
        "privacy": {"owner_public_key": str(owner / "owner.pub")}}))
    p = cli(cli_env, "run", "--config", cfg, "--source", clip, "--output", out, "--no-realtime")
    files = [f for f in tmp_path.rglob("*") if f.is_file() and f not in (clip, cfg)]
    media_files = [f for f in files if f.suffix in (".mp4", ".jpg")]
    sides = [f for f in files if f.suffix == ".age"]
    assert len(media_files) >= 4 and sorted(sides) == sorted(seal.sidecar_path(f) for f in media_files), p.stderr
    ident = keys.load_identity(owner / "owner", PW)
    orig = list(iter_frames(clip))
    needles = []
    for f in media_files:
        header, _ = seal.open_sidecar(f, ident)
        assert header["faces"]
        first = 0 if header["kind"] == "still" else None
        for face in header["faces"][:6]:
            x0, y0, x1, y1 = face["roi"]
            idx = int(f.stem.rsplit("_", 1)[1]) if first == 0 else None
            if idx is None:
                continue
            crop = np.ascontiguousarray(orig[idx][y0:y1, x0:x1])
            mid = crop.shape[0] // 2
            needles.append(crop[mid, crop.shape[1] // 4: crop.shape[1] // 4 + 16].tobytes())
            for coded in (cv2.imencode(".png", crop)[1], cv2.imencode(".webp", crop, seal.LOSSLESS_WEBP)[1]):
                coded = coded.tobytes()
                needles.append(coded[len(coded) // 2: len(coded) // 2 + 64])
    assert len(needles) >= 6
    blob = b"".join(f.read_bytes() for f in files)
    assert not any(n in blob for n in needles)
    # nor any sealed format in clear: no PNG or lossless WebP (stills are JPEG), no face stream (Matroska)
    for marker in (b"\x89PNG\r\n\x1a\n", b"WEBPVP8L", b"matroska", b"V_MPEGH/ISO/HEVC", b"V_MPEG4/ISO/AVC"):
        assert marker not in blob, marker
    # the video segments reveal to the original faces
    segs = sorted(f for f in media_files if f.suffix == ".mp4")
    p = reveal(cli_env, owner, segs[0], "-o", tmp_path / "r.mp4")
    assert p.returncode == 0, p.stderr
    # a sidecar swapped between two recordings (segments) is refused by name, nothing written
    swapped = tmp_path / "swap"
    swapped.mkdir()
    shutil.copy(segs[0], swapped / segs[0].name)
    shutil.copy(seal.sidecar_path(segs[1]), seal.sidecar_path(swapped / segs[0].name))
    p = reveal(cli_env, owner, swapped / segs[0].name, "-o", tmp_path / "s.mp4")
    assert p.returncode == 1 and "does not belong" in p.stderr and segs[0].name in p.stderr, p.stderr
    assert not (tmp_path / "s.mp4").exists()


def test_identity_key_determinism(media, tmp_path, cli_env):
    """--identity-key: the same key gives byte-identical output, another key other synthetic people."""
    for name, text in (("a", "key one"), ("b", "key two")):
        (tmp_path / name).write_text(text)
    outs = {}
    for run, key in (("a1", "a"), ("a2", "a"), ("b1", "b")):
        outs[run] = tmp_path / f"{run}.png"
        cli(cli_env, "anonymize", media["group1"], "-o", outs[run], "--method", "generative",
            "--identity-key", tmp_path / key, "-q")
    assert outs["a1"].read_bytes() == outs["a2"].read_bytes()
    assert outs["a1"].read_bytes() != outs["b1"].read_bytes()


def test_decoy_with_wrong_key(owner, media, tmp_path, cli_env):
    """--decoy re-renders the stored synthetic faces (generative: the detector finds them) with
    identities from the wrong key; blurred media has no face to re-render."""
    anon_path, out = tmp_path / "g.png", tmp_path / "decoy.png"
    cli(cli_env, "anonymize", media["group1"], "-o", anon_path, "--owner-key", owner / "owner.pub",
        "--method", "generative", "-q")
    p = reveal(cli_env, owner, anon_path, "-o", out, "--decoy", key="other")
    assert p.returncode == 0 and "decoy" in p.stderr, p.stderr
    orig, anon, dec = (cv2.imread(str(x)) for x in (media["group1"], anon_path, out))
    covered = (anon != orig).any(axis=2)
    # the faces are re-rendered (not the blur), and nowhere near the original there
    assert (dec[covered] != anon[covered]).mean() > 0.5
    assert psnr(dec[covered], orig[covered]) < 30


class Gate(list):
    """Face regions whose reading blocks on the named worker thread until `event` is set: the worker
    is made to fall behind without timing."""

    def __init__(self, items, thread: str, event: threading.Event):
        super().__init__(items)
        self.thread, self.event = thread, event

    def __iter__(self):
        if threading.current_thread().name == self.thread:
            assert self.event.wait(120)
        return super().__iter__()


def wait_empty(q, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while q.qsize() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not q.qsize(), "the worker did not take the first job"


def test_sealing_worker_behind_fails_closed(owner, media, tmp_path, caplog):
    """SealWriter seals stills off the frame loop; when its queue is full the job is dropped (its
    pixels never written), logged and counted, the anonymized media stays; close() waits for the rest."""
    rec, ident = keys.recipient(owner / "owner.pub"), keys.load_identity(owner / "owner", PW)
    img = cv2.imread(str(media["group1"]))
    roi = (200, 100, 264, 164)
    region = np.ascontiguousarray(img[100:164, 200:264])
    gate = threading.Event()
    writer = seal.SealWriter(rec, jobs=1)
    data = cv2.imencode(".jpg", img)[1].tobytes()
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"s{i}.jpg")
        paths[-1].write_bytes(data)
    crops = lambda: seal.Crops(Gate([(1, roi, region, None)], "seal-writer", gate))  # noqa: E731
    took = [writer.still(crops(), paths[0], data, img.shape)]
    wait_empty(writer.q)  # the worker holds the first job
    took += [writer.still(crops(), p, data, img.shape) for p in paths[1:]]
    assert took == [True, True, False] and writer.dropped == 1
    assert "s2.jpg" in caplog.text and "not sealed" in caplog.text
    gate.set()
    writer.close()
    assert [seal.sidecar_path(p).exists() for p in paths] == [True, True, False]
    for p in paths[:2]:
        header, blobs = seal.open_sidecar(p, ident)
        back = cv2.imdecode(np.frombuffer(blobs[header["faces"][0]["pixels"]], np.uint8), cv2.IMREAD_COLOR)
        assert np.array_equal(back, region)
    row = region[32].tobytes()
    assert not any(row in f.read_bytes() for f in tmp_path.iterdir())


def test_live_video_seal_drops_frames_it_cannot_encode(tmp_path, capfd):
    """The daemon's face stream never makes the frame loop wait: with the encoder behind, a frame's
    regions that do not fit its queue are dropped and counted in the header; reveal restores the
    rest, leaves the dropped frames as stored and says how many there were."""
    import pyrage
    from anoncam import reveal as reveal_mod
    rng = np.random.default_rng(0)
    region = rng.integers(0, 255, (48, 40, 3), np.uint8)
    n = seal.VIDEO_QUEUE + 5
    media = tmp_path / "m.avi"  # the stored (here: lossless, grey) video of the segment
    w = cv2.VideoWriter(str(media), cv2.VideoWriter_fourcc(*"FFV1"), 25.0, (160, 120))
    for _ in range(n):
        w.write(np.full((120, 160, 3), 128, np.uint8))
    w.release()
    gate = threading.Event()
    vs = seal.VideoSeal(25.0, (160, 120), live=True)
    crops = lambda: seal.Crops(Gate([(3, (10, 20, 50, 68), region, None)], "seal-video", gate))  # noqa: E731
    vs.add(crops())
    wait_empty(vs.q)
    for _ in range(seal.VIDEO_QUEUE + 3):
        vs.add(crops())
    vs.add(None)  # a frame without faces
    assert vs.dropped == 3
    gate.set()
    ident = pyrage.x25519.Identity.generate()
    payload = vs.finish(media)
    header, blobs = seal.unpack(payload, "test")
    assert header["dropped"] == 3 and header["frames"] == n
    assert header["stream_frames"] == list(range(seal.VIDEO_QUEUE + 1))
    assert [f["frame"] for f in header["faces"]] == header["stream_frames"]
    seal.sidecar_path(media).write_bytes(seal.encrypt(payload, ident.to_public()))
    out = tmp_path / "r.mkv"
    assert reveal_mod.reveal_video(media, out, ident) == seal.VIDEO_QUEUE + 1
    assert "could not seal the faces of 3 frame(s)" in capfd.readouterr().err
    back = list(iter_frames(out))
    assert len(back) == n
    for i, img in enumerate(back):
        if i <= seal.VIDEO_QUEUE:
            assert psnr(img[20:68, 10:50], region) >= 30  # noise: the hardest case for the encoder
        else:
            assert np.abs(img.astype(int) - 128).max() <= 1  # dropped or no face: as stored


def test_mqtt_snapshots_are_sealed(owner, media, tmp_path, cli_env):
    """With an owner key, every MQTT snapshot is followed on <snapshot>/sealed by its faces sealed to
    the owner (real mosquitto, real daemon): saved as NAME.jpg + NAME.jpg.age, `anoncam reveal` restores
    them; the sealed payload is ciphertext and bound to its own snapshot."""
    from test_mqtt import BASE, CLIP, Broker, Sub, daemon_config, finish, start_daemon
    broker = Broker(tmp_path / "broker").start()
    try:
        sub = Sub(broker.port, topics=(f"{BASE}/snapshot", f"{BASE}/snapshot/sealed"))
        cfg = daemon_config(tmp_path, fps=20, snapshot={"every_s": 0.5, "max_width": 320})
        proc = start_daemon(media, tmp_path, cli_env, f"mqtt://127.0.0.1:{broker.port}", cfg, 60,
                            "--owner-key", str(owner / "owner.pub"))
        err = finish(proc)
        assert sub.wait(lambda: len(sub.on(f"{BASE}/snapshot/sealed")) == len(sub.on(f"{BASE}/snapshot")) >= 4,
                        15), err[-2000:]
        sub.close()
    finally:
        broker.stop()
    snaps, sealed = sub.on(f"{BASE}/snapshot"), sub.on(f"{BASE}/snapshot/sealed")
    ident = keys.load_identity(owner / "owner", PW)
    originals = list(iter_frames(media[CLIP]))
    d = tmp_path / "saved"
    d.mkdir()
    checked = 0
    for i, (jpg, age) in enumerate(zip(snaps, sealed)):
        assert age.payload.startswith(b"age-encryption.org/v1\n") and b"WEBPVP8L" not in age.payload
        (d / f"{i}.jpg").write_bytes(jpg.payload)
        (d / f"{i}.jpg.age").write_bytes(age.payload)
        header, _ = seal.open_sidecar(d / f"{i}.jpg", ident)
        if not header["faces"]:
            continue
        p = reveal(cli_env, owner, d / f"{i}.jpg", "-o", d / f"{i}.png")
        assert p.returncode == 0, p.stderr
        anon, back = cv2.imread(str(d / f"{i}.jpg")), cv2.imread(str(d / f"{i}.png"))
        frame = int(header["media_name"].rsplit("_", 1)[1].split(".")[0])
        orig = cv2.resize(originals[frame], (anon.shape[1], anon.shape[0]), interpolation=cv2.INTER_AREA)
        for f in header["faces"]:
            x0, y0, x1, y1 = f["roi"]
            near, anon_psnr = psnr(back[y0:y1, x0:x1], orig[y0:y1, x0:x1]), psnr(anon[y0:y1, x0:x1], orig[y0:y1, x0:x1])
            assert near >= 30 and near > anon_psnr + 5, (near, anon_psnr)
            checked += 1
    assert checked >= 3
    # a sealed payload saved beside another snapshot does not open it
    (d / "0.jpg.age").write_bytes(sealed[1].payload)
    with pytest.raises(seal.SealError, match="does not belong"):
        seal.open_sidecar(d / "0.jpg", ident)
