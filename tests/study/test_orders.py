"""Language orders: the paper's Table 3, restriction to a run's languages, custom, random."""

from __future__ import annotations

import pytest

from hpc_forget.errors import OrderError
from hpc_forget.study.orders import MASSIVE_LOCALES, PAPER_ORDERS, OrderSpec, resolve_order


def test_paper_orders_are_permutations_of_the_52_locales():
    assert len(MASSIVE_LOCALES) == 52
    for n, order in PAPER_ORDERS.items():
        assert sorted(order) == list(MASSIVE_LOCALES), n


def test_order_4_uses_nl_NL_not_the_papers_ml_NL_typo():
    assert PAPER_ORDERS[4][25] == "nl-NL"
    assert "ml-NL" not in PAPER_ORDERS[4]
    assert PAPER_ORDERS[4].count("ml-IN") == 1


def test_builtin_order_restricted_to_run_languages():
    langs = ("en-US", "th-TH", "de-DE", "sw-KE")
    assert resolve_order(OrderSpec(builtin=1), langs) == ("en-US", "th-TH", "de-DE", "sw-KE")
    assert resolve_order(OrderSpec(builtin=2), langs) == ("de-DE", "sw-KE", "th-TH", "en-US")


def test_random_order_is_seeded_permutation():
    langs = tuple(MASSIVE_LOCALES)
    a = resolve_order(OrderSpec(random_seed=3), langs)
    assert a == resolve_order(OrderSpec(random_seed=3), langs)
    assert a != resolve_order(OrderSpec(random_seed=4), langs)
    assert sorted(a) == sorted(langs)


def test_custom_order_must_be_permutation():
    with pytest.raises(OrderError, match="missing de-DE"):
        resolve_order(OrderSpec(custom=("en-US",)), ("en-US", "de-DE"))
