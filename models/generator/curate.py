"""Mark the bank's flawed identities, which the identity choice then never takes (offline recipe).

  python models/generator/curate.py [--bank models/generator/identities.npz]

Chosen by looking at the bank's sheet (`build_identities.py --sheet`, or every identity's sharp
texture) and at contact sheets where they were drawn: a composite whose members disagreed keeps a
trace of each (rims of glasses, a second eye line), and Real-ESRGAN sharpens such traces into
marks that read as scars, monocles or glasses on every face the identity is given. Rewrites the
bank in place (the array `flawed`), every other array unchanged; then update generator_identities'
sha256 and size in models/manifest.yaml.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bank_arg, rewrite_bank  # noqa: E402

FLAWED = {
    13: "rims of glasses around both eyes",
    15: "a dark line across the right cheek, drawn as a scar",
    21: "a black ring around one eye",
    24: "a second, ghost line above and below each eye",
    26: "rims of glasses around both eyes",
    33: "a bright patch down the right side of the face",
    47: "rims of glasses around both eyes",
}


def add_flawed(path: Path, flawed: dict[int, str] = FLAWED) -> None:
    print(f"{len(flawed)} flawed identities marked -> {rewrite_bank(path, flawed=np.int32(sorted(flawed)))}")


def main() -> None:
    add_flawed(bank_arg())


if __name__ == "__main__":
    main()
