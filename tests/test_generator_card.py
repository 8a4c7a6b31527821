"""The generator's model card states what the code does: its numbers are the code's constants."""
import inspect
import re
from pathlib import Path

from anoncam.anonymize import facegen as fg
from anoncam.anonymize import generative as gen
from anoncam.config import AnonymizeConfig

CARD = (Path(__file__).resolve().parents[1] / "models" / "generator" / "CARD.md").read_text()
TEXT = " ".join(CARD.split())  # line breaks folded


def default(field: str):
    return AnonymizeConfig.model_fields[field].default


def test_card_numbers_are_the_constants():
    k = inspect.signature(gen.IdentityBank.candidates).parameters["k"].default
    stated = {
        f"the {k} bank identities": "candidates per track",
        f"at most {gen.CHECK} reads ({2 * gen.CHECK} while SFace matches them)": "reads per track",
        f"cosine >= {gen.LIKE_MAX:g}": "SFace rejection threshold",
        f"within {gen.AGE_OK:g} years": "age tolerance",
        f"`LIKE_WEIGHT = {gen.LIKE_WEIGHT:g}`": "SFace weight in the choice",
        f"`FACERES_WEIGHT = {gen.FACERES_WEIGHT:g}`": "FaceRes weight in the choice",
        f"`SHAPE_PULL = {fg.SHAPE_PULL}`": "identity shape",
        f"forehead-to-chin {fg.OVAL_HEIGHT:g} px": "canonical oval height",
        f"1x11x{fg.SIZE}x{fg.SIZE}": "input tensor",
        f"`anonymize.generative_mask_scale` ({default('generative_mask_scale'):g})": "covered extent",
        f"`anonymize.generative_min_face` ({default('generative_min_face')} px)": "smallest generated face",
        f"`anonymize.generative_net: {str(default('generative_net')).lower()}`": "network default",
        f"`RENDER_MAX = {gen.RENDER_MAX:g}`x the crop": "sharp rendering scale",
        f"x`FACE_ZONE` = {fg.FACE_ZONE:g}": "face zone of the ring fill",
        f"within {fg.MIRROR_DOWN[0]:g}-{fg.MIRROR_DOWN[1]:g} degrees of straight down": "smooth fill below the chin",
        f"`MOUTH_OPEN = {fg.MOUTH_OPEN:g}` crop px": "open mouth",
    }
    missing = [f"{what}: {s!r}" for s, what in stated.items() if s not in TEXT]
    assert not missing, "the card does not state the code's values:\n" + "\n".join(missing)


def test_card_does_not_claim_the_network_renders_by_default():
    assert default("generative_net") is False
    assert not re.search(r"The network's output inside the covered region is pasted", TEXT)
