"""`anoncam eval`: privacy and utility of each anonymization method on public research data.

An offline tool, never part of the camera: `anoncam run` and `anonymize` do not import it, and its
models (SFace, age, gender, fer) and data (ORL) are loaded only here. See core.py for the method,
metrics.py for the instruments, report.py for the output.
"""
from __future__ import annotations

from pathlib import Path

from .core import BASELINE, DEFAULT_METHODS, Options, evaluate, known_methods


def run(opts: Options) -> dict:
    """Evaluate and write report.md, report.json and the PNG figures into opts.out; return the JSON."""
    from .report import write
    return write(evaluate(opts), Path(opts.out))


__all__ = ["BASELINE", "DEFAULT_METHODS", "Options", "evaluate", "known_methods", "run"]
