"""Golden-file helpers shared by the tests of generated scripts and command lines."""

from __future__ import annotations

import os
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "golden"

# Paths with a space, both quotes and a dollar sign: the generated shell must keep them whole.
NASTY = '/scratch/it\'s a "study" $HOME'


def check_golden(name: str, text: str) -> None:
    """Compare ``text`` with tests/golden/NAME (HPC_FORGET_UPDATE_GOLDEN=1 rewrites it)."""
    path = GOLDEN / name
    if os.environ.get("HPC_FORGET_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"{path} missing: run with HPC_FORGET_UPDATE_GOLDEN=1 once"
    assert text == path.read_text(encoding="utf-8"), (
        f"{name} changed; if intended, regenerate with HPC_FORGET_UPDATE_GOLDEN=1 and review the diff"
    )
