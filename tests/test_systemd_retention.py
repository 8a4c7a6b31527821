"""A full disk cannot stop the camera, and frees itself: below the free-space floor the oldest recordings
are deleted first and each deletion is logged, also when the write that found the disk full failed.

The failing write is real: the writer runs in a child process with RLIMIT_FSIZE set below a JPEG's size,
so the kernel refuses the write (EFBIG), as it refuses one on a full disk (ENOSPC)."""
import json
import subprocess
import sys

CHILD = r'''
import json, logging, resource, signal, sys
import numpy as np
from anoncam.config import validate
from anoncam.sinks.disk import DiskSink
from anoncam.types import FrameResult

records = []
class Keep(logging.Handler):
    def emit(self, r):
        records.append(r.getMessage())
logging.getLogger("anoncam.sinks.disk").addHandler(Keep())
logging.getLogger("anoncam.sinks.disk").setLevel(logging.INFO)

out = sys.argv[1]
cfg = validate({"output": {"dir": out, "stills": {"every_s": 0.1}, "video": {"enabled": False},
                           "retention": {"min_free_bytes": 0}}}).output
sink = DiskSink(cfg, "cam", fps=10)
rng = np.random.default_rng(0)
frame = lambda i: FrameResult(i, 1_700_000_000 + i / 10, rng.integers(0, 255, (120, 160, 3), np.uint8), "ok")
for i in range(5):
    sink.write(frame(i))
before = sorted(p.name for p in sink.stills_dir.iterdir())

sink.cfg.retention.min_free_bytes = 1 << 62        # the disk is now below the floor
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))  # and every write fails
try:
    sink.write(frame(5))
    error = None
except OSError as e:
    error = e.errno
print(json.dumps({"before": before, "after": sorted(p.name for p in sink.stills_dir.iterdir()),
                  "error": error, "log": records}))
'''


def test_failed_write_still_frees_space_oldest_first(tmp_path):
    p = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "out")], capture_output=True, text=True,
                       check=False, timeout=120)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert len(r["before"]) == 5 and r["error"] is not None  # the write itself failed (EFBIG)
    assert r["after"] == r["before"][-1:]  # everything but the newest recording went
    deleted = [m.split("deleted ")[1] for m in r["log"] if m.startswith("retention (free space): deleted")]
    assert deleted == r["before"][:-1]  # oldest first, each one logged
