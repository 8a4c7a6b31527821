"""anoncam: anonymize faces at the moment of capture, on the device."""
__version__ = "0.1.0"
