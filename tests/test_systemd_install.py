"""systemd/install.sh --dry-run on this machine: prints every step of the install in order, for each
profile, and changes nothing outside its own temp dir (no user, no file under /etc, /opt, /var)."""
import os
import pwd
import re
import subprocess
from pathlib import Path

import pytest
from anoncam.config import Config

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "systemd" / "install.sh"
# Everything the real install writes, and the places around them.
WATCHED = ["/opt", "/etc/anoncam", "/etc/systemd/system", "/etc/systemd/journald.conf.d", "/etc/credstore",
           "/var/lib/anoncam", "/var/cache/anoncam", "/etc/apt/sources.list.d", "/etc/apt/keyrings",
           "/etc/passwd", "/etc/group", "/etc/shadow"]


def snapshot() -> dict:
    """path -> (mtime_ns, size) of every watched file and directory that exists."""
    out = {}
    for top in WATCHED:
        if not os.path.lexists(top):
            continue
        paths = [top]
        if os.path.isdir(top) and not os.path.islink(top):
            for d, dirs, files in os.walk(top):
                paths += [os.path.join(d, n) for n in dirs + files]
        for p in paths:
            st = os.lstat(p)
            out[p] = (st.st_mtime_ns, st.st_size)
    return out


def dry_run(tmp_path, *args):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    return subprocess.run(["bash", str(SCRIPT), "--dry-run", *args], env=env, capture_output=True, text=True,
                          cwd=tmp_path, timeout=120, check=False)


def commands(out: str) -> list[str]:
    return [line[2:] for line in out.splitlines() if line.startswith("+ ")]


def index(cmds, pattern) -> int:
    for i, c in enumerate(cmds):
        if re.search(pattern, c):
            return i
    raise AssertionError(f"no step matching {pattern!r} in:\n" + "\n".join(cmds))


COMMON = [  # in this order
    r"^useradd --system --user-group --home-dir /var/lib/anoncam .* anoncam$",
    r"^usermod -aG video anoncam$",
    r"^install -d -o anoncam -g anoncam -m 0700 /var/cache/anoncam /var/lib/anoncam$",
    r"^python3 -m venv --system-site-packages /opt/anoncam/venv$",
    rf"^/opt/anoncam/venv/bin/pip install .* {re.escape(str(REPO))}( |$)",
    r"^runuser -u anoncam -- env HOME=/var/cache/anoncam ANONCAM_CACHE=/var/cache/anoncam .* models fetch ",
    r"/opt/anoncam/venv/bin/anoncam models verify ",
    r"anoncam config check /etc/anoncam/config.yaml$",
    rf"^install -D -m 0644 {re.escape(str(REPO))}/systemd/anoncam.service /etc/systemd/system/anoncam.service$",
    r"systemd/profiles/journald.conf /etc/systemd/journald.conf.d/50-anoncam.conf$",
    r"^systemd-analyze verify /etc/systemd/system/anoncam.service$",
    r"^systemctl daemon-reload$",
    r"^systemctl enable anoncam.service$",
    r"^systemctl restart anoncam.service$",
]


@pytest.mark.parametrize("profile", ["pi", "jetson", "coral"])
def test_dry_run_prints_the_steps_and_changes_nothing(tmp_path, profile):
    try:
        pwd.getpwnam("anoncam")
        installed = True
    except KeyError:
        installed = False
    before = snapshot()
    p = dry_run(tmp_path, "--profile", profile)
    assert p.returncode == 0, p.stderr
    assert snapshot() == before
    assert list(tmp_path.iterdir()) == []  # nothing left in its temp dir either
    out, cmds = p.stdout, commands(p.stdout)
    assert out.startswith(f"==> dry run (profile {profile}): nothing will be changed")
    steps = COMMON
    if installed:  # a machine where install.sh really ran: the user step is skipped
        steps = [s for s in steps if "useradd" not in s and "usermod" not in s]
    positions = [index(cmds, s) for s in steps]
    assert positions == sorted(positions), "steps out of order"
    config_line = cmds[index(cmds, r"/etc/anoncam/config.yaml$")]
    assert f"systemd/profiles/{profile}.yaml" in config_line or "keeping /etc/anoncam/config.yaml" in out

    # the models fetched are the ones `anoncam run` loads with the default config
    fetched = cmds[index(cmds, "models fetch")].split("models fetch ")[1].split()
    assert sorted(fetched) == sorted({Config().detect.model, Config().landmarks.model})

    apt = " ".join(c for c in cmds if "apt-get install" in c) + out
    pip = cmds[index(cmds, r"venv/bin/pip install .*" + re.escape(str(REPO)))]
    if profile in ("pi", "coral"):
        assert "python3-picamera2" in apt  # to install, or "all present"
        if any("apt-get install" in c for c in cmds):
            assert index(cmds, "apt-get install") < index(cmds, "venv --system-site-packages")
        assert r"numpy\<2" in pip and r"opencv-python-headless\<4.12" in pip
    if profile == "coral":
        assert "libedgetpu1-std" in apt and "coral-edgetpu-stable" in out
    if profile == "jetson":
        assert "numpy" not in pip and "python3-picamera2" not in out
        gpu = cmds[index(cmds, "onnxruntime-gpu")]
        assert "--index-url https://pypi.jetson-ai-lab.io/jp6/cu126" in gpu
        assert index(cmds, "pip uninstall -y onnxruntime$") < index(cmds, "onnxruntime-gpu")
        assert index(cmds, "profiles/jetson.conf /etc/systemd/system/anoncam.service.d/10-profile.conf$")
    else:
        assert "jetson.conf" not in out


def test_no_start(tmp_path):
    p = dry_run(tmp_path, "--no-start")
    assert p.returncode == 0 and "systemctl enable anoncam.service" in p.stdout
    assert "systemctl restart anoncam.service" not in p.stdout


@pytest.mark.parametrize("args, message", [
    (["--profile", "rpi"], "--profile must be pi, jetson or coral (got 'rpi')"),
    (["--profile"], "--profile needs pi, jetson or coral"),
    (["--frobnicate"], "unknown option '--frobnicate'"),
])
def test_bad_arguments(tmp_path, args, message):
    p = dry_run(tmp_path, *args)
    assert p.returncode == 2 and message in p.stderr and p.stdout == ""
