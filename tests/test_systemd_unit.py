"""systemd/anoncam.service: `systemd-analyze verify` passes without a single warning, the hardening that
keeps camera access is there, and `systemd-analyze security --offline` scores it.

verify checks that ExecStart's program exists, so the unit is verified unchanged inside a temporary root
(--root) holding the system's own unit files and, at /opt/anoncam/venv/bin/anoncam, a copy of this
environment's real `anoncam` console script (what install.sh puts there)."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "anoncam.service"
EXEC = "opt/anoncam/venv/bin/anoncam"


def system_unit_dir() -> Path:
    for d in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if Path(d, "multi-user.target").exists():
            return Path(d)
    raise AssertionError("no systemd unit directory with multi-user.target: install the systemd package")


def anoncam_script() -> Path:
    p = Path(sys.executable).parent / "anoncam"
    assert p.is_file(), f"no anoncam console script next to {sys.executable}: pip install -e ."
    return p


@pytest.fixture
def root(tmp_path):
    """A root with the system's units, the real anoncam script at the ExecStart path, and the unit."""
    r = tmp_path / "root"
    shutil.copytree(system_unit_dir(), r / "usr/lib/systemd/system", symlinks=True)
    (r / EXEC).parent.mkdir(parents=True)
    shutil.copy2(anoncam_script(), r / EXEC)
    (r / "etc/systemd/system").mkdir(parents=True)
    shutil.copy2(UNIT, r / "etc/systemd/system/anoncam.service")
    return r


def verify(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", f"--root={root}",
                           str(root / "etc/systemd/system/anoncam.service")], capture_output=True, text=True,
                          check=False)


def security(root: Path) -> tuple[float, str]:
    p = subprocess.run(["systemd-analyze", "security", "--offline=true", f"--root={root}", "--no-pager",
                        str(root / "etc/systemd/system/anoncam.service")], capture_output=True, text=True,
                       check=False)
    m = re.search(r"Overall exposure level for anoncam\.service: (\d+\.\d)", p.stdout)
    assert m, p.stdout + p.stderr
    return float(m.group(1)), p.stdout


def directives(text: str) -> dict[str, list[str]]:
    """Key -> every value it is given in the unit (keys repeat: Environment=, SystemCallFilter=)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            k, _, v = line.partition("=")
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_verify_passes_with_no_warning(root):
    p = verify(root)
    assert p.returncode == 0, p.stderr
    assert p.stderr.strip() == "" and p.stdout.strip() == "", p.stderr + p.stdout


def test_verify_catches_what_it_should(root):
    """The check above can fail: a missing program fails verify; a misspelt key is a warning."""
    (root / EXEC).unlink()
    p = verify(root)
    assert p.returncode != 0 and "anoncam" in p.stderr
    shutil.copy2(anoncam_script(), root / EXEC)
    unit = root / "etc/systemd/system/anoncam.service"
    unit.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHom=yes"))
    p = verify(root)
    assert "Unknown key 'ProtectHom'" in p.stderr


def test_jetson_drop_in_verifies_and_applies(root):
    d = root / "etc/systemd/system/anoncam.service.d"
    d.mkdir()
    _, out_base = security(root)
    shutil.copy2(REPO / "systemd/profiles/jetson.conf", d / "10-profile.conf")
    p = verify(root)
    assert p.returncode == 0 and p.stderr.strip() == "", p.stderr
    _, out = security(root)
    assert re.search(r"✓ MemoryDenyWriteExecute=", out_base)
    assert re.search(r"✗ MemoryDenyWriteExecute=", out)  # the drop-in is read


def test_exposure_score(root):
    score, out = security(root)
    print(f"systemd-analyze security exposure: {score}")
    assert score <= 2.0, out
    for ok in ("User=/DynamicUser=", "NoNewPrivileges=", "ProtectSystem=", "ProtectHome=", "PrivateTmp=",
               "MemoryDenyWriteExecute=", "SystemCallArchitectures=", "SystemCallFilter=~@privileged",
               "CapabilityBoundingSet=~CAP_SYS_ADMIN", "RestrictNamespaces=~user"):
        assert re.search(rf"^✓ {re.escape(ok)}", out, re.MULTILINE), ok


def test_camera_access_and_privacy_settings():
    d = directives(UNIT.read_text())
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"] and d["WatchdogSec"] == ["30s"]
    assert d["Restart"] == ["always"]
    assert d["User"] == ["anoncam"] and "video" in d["SupplementaryGroups"][0].split()
    # libcamera needs /dev/video*, /dev/media*, /dev/dma_heap: nothing may close the device list.
    for closes_devices in ("PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectClock"):
        assert closes_devices not in d, closes_devices
    assert d["MemorySwapMax"] == ["0"]  # raw frames in memory never go to a swap on the SD card
    assert d["LimitCORE"] == ["0"] and d["NoNewPrivileges"] == ["yes"] and d["CapabilityBoundingSet"] == [""]
    assert d["ProtectSystem"] == ["strict"] and d["ProtectHome"] == ["yes"] and d["PrivateTmp"] == ["yes"]
    for dirs in ("StateDirectory", "CacheDirectory", "LogsDirectory", "ConfigurationDirectory"):
        assert d[dirs] == ["anoncam"], dirs
    assert "ORT_DISABLE_TELEMETRY=1" in d["Environment"]
    assert d["ExecStart"] == ["/opt/anoncam/venv/bin/anoncam run --config /etc/anoncam/config.yaml"]
    assert d["SystemCallFilter"] == ["@system-service", "~@privileged"]
    assert set(d["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}


def test_cache_directory_is_the_model_cache(tmp_path):
    """CacheDirectory=anoncam: systemd sets CACHE_DIRECTORY; anoncam must look for models there."""
    env = {k: v for k, v in os.environ.items() if k not in ("ANONCAM_CACHE", "XDG_CACHE_HOME")}
    env["CACHE_DIRECTORY"] = "/var/cache/anoncam"
    p = subprocess.run([sys.executable, "-c", "from anoncam import assets; print(assets.cache_dir())"],
                       env=env, capture_output=True, text=True, check=True)
    assert p.stdout.strip() == "/var/cache/anoncam"


def test_profiles_write_where_the_unit_allows(tmp_path):
    """Every profile's config validates (the real CLI) and writes output to the StateDirectory."""
    from anoncam.config import load
    for profile in ("pi", "jetson", "coral"):
        path = REPO / "systemd/profiles" / f"{profile}.yaml"
        p = subprocess.run([sys.executable, "-m", "anoncam", "config", "check", str(path)],
                           capture_output=True, text=True, check=False)
        assert p.returncode == 0, p.stderr
        assert str(load(path).output.dir) == "/var/lib/anoncam"


def test_daemon_process_cannot_dump_core():
    """LimitCORE=0 in the unit, and the runner itself: RLIMIT_CORE=0 and not dumpable, so neither a core
    file nor a core_pattern pipe (systemd-coredump, apport; they ignore RLIMIT_CORE) gets the frames."""
    code = ("import ctypes, resource; from anoncam.runner import no_core_dumps; no_core_dumps(); "
            "print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0), resource.getrlimit(resource.RLIMIT_CORE))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert p.returncode == 0 and p.stdout.strip() == "0 (0, 0)", p.stderr  # PR_GET_DUMPABLE == 0
