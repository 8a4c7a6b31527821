"""CPU temperature from /sys/class/thermal (for the MQTT stats)."""
from __future__ import annotations

from pathlib import Path


def cpu_temp() -> float | None:
    """CPU temperature in deg C, where readable: a cpu/x86_pkg/soc zone, else the first zone."""
    found = None
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        try:
            kind = (zone / "type").read_text().strip().lower()
            value = int((zone / "temp").read_text()) / 1000
        except (OSError, ValueError):
            continue
        if any(k in kind for k in ("cpu", "x86_pkg", "soc")):
            return round(value, 1)
        found = round(value, 1) if found is None else found
    return found
