"""anoncam: anonymize faces at the moment of capture, on the device."""
import os

# onnxruntime >= 1.2x ships 1DS telemetry on Linux: it writes a session file to TMPDIR and a device id
# under ~/.cache and would upload usage events. A privacy camera sends nothing: opt out before import.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"
