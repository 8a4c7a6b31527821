"""The daemon under the unit's seccomp filters, rebuilt here with libseccomp as systemd 252 builds them:
SystemCallFilter= (the groups expanded by `systemd-analyze syscall-filter`, native architecture only)
and MemoryDenyWriteExecute= (no writable+executable mmap, no mprotect/pkey_mprotect adding PROT_EXEC,
no shmat SHM_EXEC). Stricter than the unit: any refused call kills the process instead of EPERM, so
"it ran" means onnxruntime, LiteRT/XNNPACK and OpenCV made no refused call at all.

Evidence for x86-64 only: the ARM builds of the same libraries cannot be run here."""
import json
import signal
import subprocess
import sys

from test_systemd_unit import UNIT, directives

LAUNCHER = r'''
import ctypes, ctypes.util, json, os, sys
spec = json.loads(sys.argv[1])
lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2")

class Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]

lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                       ctypes.POINTER(Cmp)]
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
ALLOW, KILL, MASKED_EQ = 0x7FFF0000, 0x80000000, 7

def rule(ctx, action, name, *cmps):
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr < 0:
        return 0  # not a syscall on this architecture
    r = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), (Cmp * len(cmps))(*cmps) if cmps else None)
    assert r == 0, (name, r)
    return 1

def load(ctx):
    assert lib.seccomp_load(ctx) == 0

if spec["mdwe"]:  # loaded first: the allow-list below no longer permits seccomp() itself
    W, X, SHM_EXEC = 2, 4, 0o100000
    ctx = lib.seccomp_init(ALLOW)
    rule(ctx, KILL, "mmap", Cmp(2, MASKED_EQ, W | X, W | X))
    rule(ctx, KILL, "mprotect", Cmp(2, MASKED_EQ, X, X))
    rule(ctx, KILL, "pkey_mprotect", Cmp(2, MASKED_EQ, X, X))
    rule(ctx, KILL, "shmat", Cmp(2, MASKED_EQ, SHM_EXEC, SHM_EXEC))
    load(ctx)
ctx = lib.seccomp_init(KILL)  # also kills calls from any other architecture (SystemCallArchitectures=native)
n = sum(rule(ctx, ALLOW, s) for s in spec["allow"])
load(ctx)
print(f"sandbox: {n} system calls allowed, mdwe={spec['mdwe']}", file=sys.stderr, flush=True)
os.execv(spec["argv"][0], spec["argv"])
'''


def syscall_groups() -> dict[str, list[str]]:
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True).stdout
    groups, cur = {}, None
    for line in out.splitlines():
        s = line.strip()
        if line.startswith("@"):
            cur = groups.setdefault(s, [])
        elif cur is not None and s and not s.startswith("#"):
            cur.append(s)
    assert "@system-service" in groups and "@privileged" in groups, out[:500]
    return groups


def expand(names, groups) -> set[str]:
    out = set()
    for n in names:
        out |= expand(groups[n], groups) if n.startswith("@") else {n}
    return out


def unit_filter() -> tuple[list[str], bool]:
    """The unit's SystemCallFilter= as one allow-list, and whether MemoryDenyWriteExecute= is on."""
    d, groups = directives(UNIT.read_text()), syscall_groups()
    allow, deny = set(), set()
    for value in d["SystemCallFilter"]:
        if value.startswith("~"):
            deny |= expand(value[1:].split(), groups)
        else:
            allow |= expand(value.split(), groups)
    return sorted(allow - deny), d.get("MemoryDenyWriteExecute") == ["yes"]


def sandboxed(tmp_path, argv, env=None, timeout=300):
    allow, mdwe = unit_filter()
    launcher = tmp_path / "sandbox.py"
    launcher.write_text(LAUNCHER)
    spec = json.dumps({"allow": allow, "mdwe": mdwe, "argv": argv})
    return subprocess.run([sys.executable, str(launcher), spec], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_filter_is_real(tmp_path):
    """Controls: under the same filters a W+X mapping and a @privileged call are refused."""
    allow, mdwe = unit_filter()
    assert mdwe and "chroot" not in allow and "mbind" in allow and "ioctl" in allow
    wx = sandboxed(tmp_path, [sys.executable, "-c",
                              "import mmap; mmap.mmap(-1, 4096, prot=7); print('mapped')"])
    assert wx.returncode == -signal.SIGSYS and "mapped" not in wx.stdout, wx.stderr
    priv = sandboxed(tmp_path, [sys.executable, "-c", "import os; os.chroot('/'); print('chrooted')"])
    assert priv.returncode == -signal.SIGSYS and "chrooted" not in priv.stdout, priv.stderr
    ok = sandboxed(tmp_path, [sys.executable, "-c", "print('plain python runs')"])
    assert ok.returncode == 0 and "plain python runs" in ok.stdout, ok.stderr


def test_daemon_runs_under_the_units_filters(tmp_path, media, cli_env):
    out = tmp_path / "out"
    p = sandboxed(tmp_path, [sys.executable, "-m", "anoncam", "run", "--source", str(media["cap13"]),
                             "--output", str(out), "--max-frames", "40", "--no-realtime"], env=cli_env)
    assert p.returncode == 0, f"rc={p.returncode}\n{p.stderr[-3000:]}"
    assert "sandbox:" in p.stderr and "frames=40 " in p.stderr
    assert list((out / "cam0" / "video").glob("*.mp4")) and list((out / "cam0" / "stills").glob("*.jpg"))
