"""Subsampling and the per-locale train/dev/test splits of a run."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

from hpc_forget.data.corpus import Corpus, Example, Splits
from hpc_forget.data.labels import SPLITS
from hpc_forget.errors import DataError

# --------------------------------------------------------------------------------------------
# subsampling and per-locale splits


def sample_rank(seed: int | str, ex_id: str) -> bytes:
    return hashlib.sha256(f"{seed}\x00{ex_id}".encode()).digest()


def _id_key(ex_id: str) -> tuple:
    return (0, int(ex_id), "") if ex_id.isascii() and ex_id.isdigit() else (1, 0, ex_id)


def _ranked(examples: Iterable[Example], seed: int | str) -> list[Example]:
    """Examples in a seed-determined order that depends only on their ids (then content)."""
    return sorted(
        examples, key=lambda e: (sample_rank(seed, e.id), _id_key(e.id), e.locale, e.split, e.words)
    )


def _sort_by_id(examples: Iterable[Example]) -> list[Example]:
    return sorted(examples, key=lambda e: (_id_key(e.id), e.locale, e.split, e.words, e.tags))


def _check_fraction(fraction: float, option: str) -> None:
    ok = isinstance(fraction, int | float) and not isinstance(fraction, bool)
    if not ok or math.isnan(fraction) or not 0 < fraction <= 1:
        raise DataError(f"{option}={fraction!r}: must be a number in (0, 1] — fix the option")


def _check_cap(cap: int | None, option: str) -> None:
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise DataError(f"{option}={cap!r}: must be a positive integer or None — fix the option")


def subsample(
    examples: Iterable[Example],
    *,
    max_examples: int | None = None,
    fraction: float = 1.0,
    seed: int = 0,
) -> list[Example]:
    """A deterministic subset, independent of the input order, returned sorted by id.

    Each example is ranked by a hash of (seed, id); ``fraction`` (the data-scale factor) keeps
    the first ``floor(fraction * n + 0.5)`` (at least 1), then ``max_examples`` caps that. So a
    smaller fraction or cap gives a subset of a larger one, and parallel locales (same ids) get
    the same ids.
    """
    _check_fraction(fraction, "fraction")
    _check_cap(max_examples, "max_examples")
    items = _sort_by_id(examples)
    n = len(items)
    keep = n if fraction == 1 else min(n, max(1, math.floor(fraction * n + 0.5)))
    if max_examples is not None:
        keep = min(keep, max_examples)
    if keep >= n:
        return items
    return _sort_by_id(_ranked(items, seed)[:keep])


def prepare_splits(
    corpus: Corpus,
    locale: str,
    *,
    max_train: int | None = None,
    max_eval: int | None = None,
    train_fraction: float = 1.0,
    seed: int = 0,
    missing_train: str = "error",
    dev_fraction_for_train: float = 0.5,
) -> Splits:
    """Train/dev/test for one locale.

    Train is ``subsample(train, fraction=train_fraction, max_examples=max_train, seed=seed)``.
    Dev and test are capped at ``max_eval`` with a fixed seed (0), so every run of a locale is
    scored on the same examples. A locale with no train split (de-DE, sw-KE): with
    ``missing_train="error"`` a DataError; with ``"split-dev"`` a fixed, seed-independent
    ``dev_fraction_for_train`` of its dev split (ranked by id hash) becomes its train split and
    the rest stays dev (disjoint).
    """
    if missing_train not in ("error", "split-dev"):
        raise DataError(
            f"missing_train={missing_train!r}: unknown value — use 'error' or 'split-dev'"
        )
    _check_fraction(train_fraction, "train_fraction")
    _check_fraction(dev_fraction_for_train, "dev_fraction_for_train")
    _check_cap(max_train, "max_train")
    _check_cap(max_eval, "max_eval")
    train, dev, test = (corpus.split(locale, s) for s in SPLITS)
    origin = corpus.origin(locale)
    if not (train or dev or test):
        bad = sum(1 for r in corpus.invalid if r.locale == locale)
        why = f"all {bad} rows are invalid" if bad else "the file has no rows"
        raise DataError(
            f"{origin}: no rows for locale {locale} ({why}) — restore the file from the MASSIVE"
            " release, or drop the locale from data.languages"
        )
    if not test:
        raise DataError(
            f"{origin}: locale {locale} has no test rows (partition 'test') — it cannot be"
            " scored; use a file with its test split, or drop the locale"
        )
    if not train:
        if missing_train == "error":
            raise DataError(
                f"{origin}: locale {locale} has no train split — set "
                "data.missing_train: split-dev to train on part of its dev split, or drop the locale"
            )
        if len(dev) < 2 or dev_fraction_for_train >= 1:
            raise DataError(
                f"{origin}: locale {locale} has {len(dev)} dev rows — too few to split "
                "into train and dev with dev_fraction_for_train < 1"
            )
        ranked = _ranked(_sort_by_id(dev), "split-dev")
        k = min(len(dev) - 1, max(1, math.floor(dev_fraction_for_train * len(dev) + 0.5)))
        train = [Example(e.id, e.locale, "train", e.words, e.tags) for e in ranked[:k]]
        dev = ranked[k:]
    if not dev:
        raise DataError(
            f"{origin}: locale {locale} has no dev rows (partition 'dev') — they are needed for"
            " model selection; use a file with its dev split, or drop the locale"
        )
    return Splits(
        train=tuple(subsample(train, max_examples=max_train, fraction=train_fraction, seed=seed)),
        dev=tuple(subsample(dev, max_examples=max_eval, seed=0)),
        test=tuple(subsample(test, max_examples=max_eval, seed=0)),
    )
