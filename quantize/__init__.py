"""int8 for anoncam: static QDQ ONNX (onnxruntime) with drift reports and gates, and the full-integer
TFLite path through onnx2tf in a separate tools venv. See quantize/README.md.

    python -m quantize [build] [yunet sface generator] [--force] [--generator PATH]
    python -m quantize tflite [yunet ...]        # the onnx2tf tools venv (heavy: tensorflow)
    anoncam models quantize [NAME...]            # the same build from the anoncam CLI
"""
from .core import DEFAULT_GATES, MODELS, QuantizeError, build, generator_path, source

__all__ = ["DEFAULT_GATES", "MODELS", "QuantizeError", "build", "generator_path", "source"]
