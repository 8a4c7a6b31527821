"""The anonymization methods by name: the one list that the config schema, the CLI, `anoncam eval`,
MQTT commands and Home Assistant's select all read.

A method is a function (roi, face_px, **settings) -> replacement ROI of the same size (see
anonymize/apply.py for the settings passed). Its entry here says what it needs, so nothing else
hard-codes method names: which config field sets its covered extent, whether it uses FaceMesh
landmarks, which manifest models it loads (verified at start-up through its `prepare`). The function
itself is imported only when the method is first used, so reading the names costs nothing.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class MethodSpec:
    name: str
    summary: str
    target: str                      # "module:attribute" of the function, relative to anoncam
    mask_scale_field: str = "mask_scale"  # AnonymizeConfig field giving the covered extent
    landmarks: bool = False          # draws with FaceMesh landmarks when the face has them
    models: tuple[str, ...] = ()     # manifest models it loads (checked by its prepare())


SPECS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> None:
    if spec.name in SPECS:
        raise ValueError(f"method {spec.name!r} is registered already")
    SPECS[spec.name] = spec


register(MethodSpec("blur", "strong Gaussian blur of the face region", ".anonymize.cover:blur"))
register(MethodSpec("pixelate", "coarse mosaic of the face region", ".anonymize.cover:pixelate"))
register(MethodSpec("solid", "a flat fill (anonymize.solid_color)", ".anonymize.cover:solid"))
register(MethodSpec(
    "generative", "a synthetic person per track, keeping pose, expression, lighting, age and gender",
    ".anonymize.generative:GENERATIVE", mask_scale_field="generative_mask_scale", landmarks=True,
    models=("generator_identities", "age", "gender", "sface", "faceres", "faceres_graph", "iris")))


def names() -> tuple[str, ...]:
    return tuple(SPECS)


def spec(name: str) -> MethodSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(f"unknown anonymization method {name!r}; one of {', '.join(SPECS)}") from None


def load(name: str) -> Callable:
    module, _, attr = spec(name).target.partition(":")
    return getattr(importlib.import_module(module, __package__), attr)
