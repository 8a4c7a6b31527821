"""Owner keys (issue 15): real age keys, real files, the real CLI. Sealed faces restore bit-exact on
stills and at >= 40 dB on video; wrong key, tampered, truncated and swapped sidecars fail by name with
nothing written; the camera refuses a private key; nothing the daemon writes holds original face pixels."""
from __future__ import annotations

import shutil
import subprocess

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
    assert not out.exists() and not (tmp_path / "o").exists()


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


def test_stock_age_opens_a_sidecar(owner, stills, tmp_path):
    if shutil.which("age") is None:
        pytest.fail("the age CLI is missing (Debian package age)")
    ident = tmp_path / "id.txt"
    ident.write_text(str(keys.load_identity(owner / "owner", PW)) + "\n")
    p = subprocess.run(["age", "-d", "-i", str(ident), str(stills / "group1.png.age")], capture_output=True)
    assert p.returncode == 0, p.stderr
    header, blobs = seal.unpack(p.stdout, "age output")
    assert header["media_sha256"] == seal.file_sha256(stills / "group1.png") and len(header["faces"]) >= 3
    assert cv2.imdecode(np.frombuffer(blobs[header["faces"][0]["pixels"]], np.uint8), cv2.IMREAD_COLOR) is not None


def test_sidecar_reveals_nothing_in_clear(stills):
    data = (stills / "group1.png.age").read_bytes()
    assert data.startswith(b"age-encryption.org/v1\n-> X25519 ")
    header = data[:data.index(b"\n--- ")]  # the only clear part: one X25519 stanza (plus age's grease)
    assert header.count(b"\n-> X25519 ") == 1 and b"faces" not in header
    # the payload is ciphertext: none of the format's markers (long enough not to occur by chance)
    for marker in (b'"media_sha256"', b'"faces"', b'"roi"', b"\x89PNG\r\n\x1a\n"):
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
    searched for the original pixels of each sealed region (raw rows and the PNG of the region)."""
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
            png = cv2.imencode(".png", crop)[1].tobytes()
            needles.append(png[len(png) // 2: len(png) // 2 + 64])
    assert len(needles) >= 6
    blob = b"".join(f.read_bytes() for f in files)
    assert not any(n in blob for n in needles)
    # and the video segments reveal to the original faces
    seg = sorted(f for f in media_files if f.suffix == ".mp4")[0]
    p = reveal(cli_env, owner, seg, "-o", tmp_path / "r.mp4")
    assert p.returncode == 0, p.stderr


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
