"""Shared, session-scoped fixtures for the whole suite.

- `massive_dir`: the real MASSIVE 1.1 files of tests/assets/massive (en-US, th-TH complete;
  de-DE, sw-KE dev+test), decompressed from their `.xz` copies once per session.
- `tiny_texts`: a few thousand real en-US and th-TH utterances (first lines of each file).
- `tiny_labels`: "O" + B-/I- for every slot type annotated in en-US (MASSIVE's 111 labels).
- `tiny_model_dir` / `tiny_tokenizer`: a tiny XLM-R (tokenizer trained on `tiny_texts`),
  built once per session with `models.build_tiny`.
- `xlmr_tokenizer_dir` / `xlmr_tokenizer`: the rebuilt real XLM-R tokenizer of
  tests/assets/xlmr-tokenizer (decompressed once per session), for realistic sequence lengths.
- `reference_dir`: tests/assets (languages.md, the reference table of the 52 locales).

Everything comes from inside the repository: a fresh clone runs every test, nothing skips for
want of data (tests/assets/README.md says where each file comes from).

The suite never downloads: HF_HUB_OFFLINE is set (unless the environment already sets it)
before anything imports huggingface_hub, so an accidental hub access fails at once instead
of retrying the network for minutes.
"""

from __future__ import annotations

import json
import lzma
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

TEST_DATA = Path(__file__).resolve().parent / "assets"
MASSIVE_LOCALES = ("en-US", "th-TH", "de-DE", "sw-KE")
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


def _unxz(src_dir: Path, out_dir: Path) -> Path:
    """Decompress every `*.xz` file of `src_dir` into `out_dir` (name without `.xz`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for src in sorted(src_dir.glob("*.xz")):
        with lzma.open(src, "rb") as fin, open(out_dir / src.name[: -len(".xz")], "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    return out_dir


@pytest.fixture(scope="session")
def massive_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real MASSIVE 1.1 files (en-US, th-TH full; de-DE, sw-KE dev+test) in a session tmp dir.

    Decompressed from tests/assets/massive/*.jsonl.xz; tests must not write into it.
    """
    path = _unxz(TEST_DATA / "massive", tmp_path_factory.mktemp("massive"))
    missing = [loc for loc in MASSIVE_LOCALES if not (path / f"{loc}.jsonl").is_file()]
    assert not missing, f"tests/assets/massive lacks {missing}"
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
    from hpc_forget.models.tiny import build_tiny

    return build_tiny(
        tiny_texts, tmp_path_factory.mktemp("tiny-model"), tiny_labels, seed=0, mlm_steps=0
    )


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path) -> Any:
    """The tiny model's fast XLM-R tokenizer."""
    from hpc_forget.models.hub import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """tests/assets: languages.md (script, family and Joshi class of the 52 locales)."""
    return TEST_DATA


@pytest.fixture(scope="session")
def xlmr_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real XLM-R SentencePiece vocabulary (rebuilt), decompressed into a session tmp dir."""
    path = _unxz(TEST_DATA / "xlmr-tokenizer", tmp_path_factory.mktemp("xlmr-tokenizer"))
    assert (path / "sentencepiece.bpe.model").is_file(), "tests/assets/xlmr-tokenizer is empty"
    return path


@pytest.fixture(scope="session")
def xlmr_tokenizer(xlmr_tokenizer_dir: Path) -> Any:
    """The real XLM-R tokenizer (250,002 pieces; loading takes about 2 s)."""
    from hpc_forget.models.hub import load_tokenizer

    return load_tokenizer(str(xlmr_tokenizer_dir))
