"""Shared, session-scoped fixtures for the whole suite.

- `massive_dir`: the real MASSIVE files in shared/data/massive (skips when absent).
- `tiny_texts`: a few thousand real en-US and th-TH utterances (first lines of each file).
- `tiny_labels`: "O" + B-/I- for every slot type annotated in en-US (MASSIVE's 111 labels).
- `tiny_model_dir` / `tiny_tokenizer`: a tiny XLM-R (tokenizer trained on `tiny_texts`),
  built once per session with `models.build_tiny`.
- `xlmr_tokenizer_dir` / `xlmr_tokenizer`: the rebuilt real XLM-R tokenizer in
  shared/models/xlmr-tokenizer, for realistic sequence lengths (skips when absent).

The suite never downloads: HF_HUB_OFFLINE is set (unless the environment already sets it)
before anything imports huggingface_hub, so an accidental hub access fails at once instead
of retrying the network for minutes.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

SHARED = Path(__file__).resolve().parents[2] / "shared"
TINY_LINES = 1500  # lines read from each of en-US and th-TH (~3,000 utterances)
_SLOT = re.compile(r"\[\s*([^\[\]:]+?)\s*:")


def _head_utterances(path: Path, n: int) -> list[str]:
    out = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= n:
                break
            out.append(json.loads(line)["utt"])
    return out


@pytest.fixture(scope="session")
def massive_dir() -> Path:
    """shared/data/massive (real MASSIVE 1.1 files: en-US, th-TH full; de-DE, sw-KE dev+test)."""
    path = SHARED / "data" / "massive"
    if not (path / "en-US.jsonl").is_file():
        pytest.skip(f"real MASSIVE data not found at {path}")
    return path


@pytest.fixture(scope="session")
def tiny_texts(massive_dir: Path) -> list[str]:
    """The first TINY_LINES utterances of en-US.jsonl and of th-TH.jsonl (real text)."""
    texts = _head_utterances(massive_dir / "en-US.jsonl", TINY_LINES)
    th = massive_dir / "th-TH.jsonl"
    if th.is_file():
        texts += _head_utterances(th, TINY_LINES)
    return texts


@pytest.fixture(scope="session")
def tiny_labels(massive_dir: Path) -> tuple[str, ...]:
    """ "O", then B-<t>, I-<t> for every slot type t in en-US's annot_utt, sorted (111 labels).

    Read straight from the file so the fixture does not depend on data.py.
    """
    text = (massive_dir / "en-US.jsonl").read_text(encoding="utf-8")
    types = sorted({m.group(1) for m in _SLOT.finditer(text)})
    return ("O", *(f"{p}-{t}" for t in types for p in ("B", "I")))


@pytest.fixture(scope="session")
def tiny_model_dir(
    tmp_path_factory: pytest.TempPathFactory, tiny_texts: list[str], tiny_labels: tuple[str, ...]
) -> Path:
    """A tiny XLM-R model folder (config, random weights, tokenizer) built once per session."""
    from hpc_forget.models import build_tiny

    return build_tiny(
        tiny_texts, tmp_path_factory.mktemp("tiny-model"), tiny_labels, seed=0, mlm_steps=0
    )


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path) -> Any:
    """The tiny model's fast XLM-R tokenizer."""
    from hpc_forget.models import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="session")
def xlmr_tokenizer_dir() -> Path:
    """shared/models/xlmr-tokenizer: the real XLM-R SentencePiece vocabulary, rebuilt."""
    path = SHARED / "models" / "xlmr-tokenizer"
    if not (path / "sentencepiece.bpe.model").is_file():
        pytest.skip(f"XLM-R tokenizer not found at {path}")
    return path


@pytest.fixture(scope="session")
def xlmr_tokenizer(xlmr_tokenizer_dir: Path) -> Any:
    """The real XLM-R tokenizer (250,002 pieces; loading takes about 2 s)."""
    from hpc_forget.models import load_tokenizer

    return load_tokenizer(str(xlmr_tokenizer_dir))
