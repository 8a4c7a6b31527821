"""The per-face decision step before anonymization.

Today every face is anonymized with the configured method. This is the place where consent
(enrolled people who may stay visible) and owner keys (a per-face sidecar that can restore the
original) plug in: a policy sets `face.method` (None = leave visible) and may add to the sidecar.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from .types import Face


class Policy(Protocol):
    def decide(self, frame: np.ndarray, faces: list[Face], sidecar: dict) -> None: ...


class AnonymizeAll:
    def __init__(self, method: str):
        self.method = method

    def decide(self, frame: np.ndarray, faces: list[Face], sidecar: dict) -> None:
        for f in faces:
            f.method = self.method


def default_policy(cfg) -> Policy:
    """Consent (consent.enabled: enrolled people may stay visible) or everyone anonymized."""
    if cfg.consent.enabled:
        from .consent.gallery import default_path
        from .consent.policy import ConsentPolicy
        return ConsentPolicy(cfg.anonymize.method, cfg.consent, default_path(cfg))
    return AnonymizeAll(cfg.anonymize.method)
