"""int8 for anoncam: static QDQ ONNX (onnxruntime) with drift reports and gates, and the full-integer
TFLite path through onnx2tf in a separate tools venv. See quantize/README.md.

    python -m quantize [build] [yunet sface generator] [--force] [--generator PATH]
    python -m quantize tflite [yunet ...]        # the onnx2tf tools venv (heavy: tensorflow)
    anoncam models quantize [NAME...]            # the anoncam CLI runs this tool (a subprocess)

Build time only: quantize imports anoncam, anoncam never imports quantize (tests/test_quantize.py).
"""
from .core import DEFAULT_GATES, MODELS, QuantizeError, build, generator_path, source

__all__ = ["DEFAULT_GATES", "MODELS", "QuantizeError", "build", "generator_path", "source"]
