"""Language orders: the paper's five (Table 3), custom lists, seeded random permutations and
orders advised from a store (``{advised: STORE}``, docs/advice.md)."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from hpc_forget.errors import OrderError


@dataclass(frozen=True)
class OrderSpec:
    """A language order: a paper order by number, a custom list, or random from a seed.

    An advised order (``{advised: STORE}`` in a config) is a custom list that remembers the
    store it was advised from: ``custom`` holds the order, ``advised`` the store as written.
    """

    builtin: int | None = None
    custom: tuple[str, ...] | None = None
    random_seed: int | None = None
    advised: str | None = None


def _split(s: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in s.split(","))


# The paper's Table 3. Order 4 prints "ml-NL" at position 26 where nl-NL is meant: ml-IN
# appears later in the same order and nl-NL is otherwise absent. We use nl-NL.
PAPER_ORDERS: dict[int, tuple[str, ...]] = {
    1: _split(
        "en-US, ru-RU, id-ID, vi-VN, fa-IR, th-TH, ja-JP, de-DE, ro-RO, hu-HU, fr-FR, fi-FI, "
        "ko-KR, es-ES, pt-PT, nb-NO, el-GR, zh-CN, da-DK, pl-PL, he-IL, it-IT, nl-NL, ar-SA, "
        "tr-TR, hi-IN, zh-TW, ta-IN, sv-SE, sl-SL, ca-ES, ka-GE, lv-LV, ms-MY, bn-BD, ml-IN, "
        "az-AZ, ur-PK, hy-AM, sq-AL, te-IN, kn-IN, is-IS, tl-PH, mn-MN, my-MM, sw-KE, km-KH, "
        "af-ZA, am-ET, cy-GB, jv-ID"
    ),
    2: _split(
        "tr-TR, ro-RO, ur-PK, es-ES, hi-IN, pl-PL, hy-AM, sv-SE, sl-SL, ta-IN, te-IN, ml-IN, "
        "id-ID, ka-GE, el-GR, ko-KR, de-DE, fa-IR, ms-MY, ca-ES, az-AZ, nl-NL, pt-PT, fr-FR, "
        "hu-HU, sw-KE, mn-MN, he-IL, zh-CN, fi-FI, ru-RU, is-IS, cy-GB, ja-JP, sq-AL, vi-VN, "
        "th-TH, jv-ID, it-IT, my-MM, kn-IN, lv-LV, am-ET, nb-NO, ar-SA, en-US, af-ZA, zh-TW, "
        "bn-BD, da-DK, km-KH, tl-PH"
    ),
    3: _split(
        "sv-SE, nl-NL, fi-FI, kn-IN, hu-HU, ms-MY, es-ES, my-MM, is-IS, ko-KR, af-ZA, vi-VN, "
        "bn-BD, tr-TR, tl-PH, lv-LV, ru-RU, fr-FR, en-US, ro-RO, am-ET, he-IL, hi-IN, ja-JP, "
        "te-IN, id-ID, ta-IN, it-IT, jv-ID, nb-NO, ka-GE, sq-AL, ca-ES, az-AZ, zh-TW, fa-IR, "
        "mn-MN, zh-CN, de-DE, da-DK, ml-IN, sw-KE, sl-SL, km-KH, ar-SA, pt-PT, cy-GB, ur-PK, "
        "hy-AM, el-GR, pl-PL, th-TH"
    ),
    4: _split(
        "nb-NO, ta-IN, th-TH, fi-FI, ru-RU, af-ZA, vi-VN, ko-KR, ro-RO, km-KH, is-IS, ms-MY, "
        "sl-SL, en-US, hi-IN, he-IL, bn-BD, pt-PT, fa-IR, sv-SE, am-ET, kn-IN, az-AZ, tl-PH, "
        "ar-SA, nl-NL, cy-GB, hy-AM, it-IT, de-DE, da-DK, te-IN, hu-HU, lv-LV, zh-CN, mn-MN, "
        "es-ES, ca-ES, pl-PL, fr-FR, ja-JP, ka-GE, sw-KE, id-ID, zh-TW, jv-ID, sq-AL, el-GR, "
        "tr-TR, my-MM, ml-IN, ur-PK"
    ),
    5: _split(
        "mn-MN, ml-IN, is-IS, fa-IR, az-AZ, pl-PL, de-DE, ko-KR, ar-SA, sw-KE, jv-ID, sq-AL, "
        "tl-PH, ru-RU, lv-LV, fr-FR, ro-RO, ka-GE, cy-GB, tr-TR, he-IL, sl-SL, af-ZA, nl-NL, "
        "my-MM, hu-HU, hi-IN, vi-VN, it-IT, pt-PT, da-DK, ca-ES, am-ET, el-GR, ta-IN, id-ID, "
        "te-IN, sv-SE, bn-BD, ur-PK, en-US, kn-IN, ms-MY, nb-NO, es-ES, fi-FI, zh-TW, zh-CN, "
        "ja-JP, th-TH, km-KH, hy-AM"
    ),
}
MASSIVE_LOCALES: tuple[str, ...] = tuple(sorted(PAPER_ORDERS[1]))


def resolve_order(spec: OrderSpec, languages: tuple[str, ...]) -> tuple[str, ...]:
    """The concrete order of ``languages`` that ``spec`` names.

    A paper order is restricted to the run's languages, keeping the paper's relative order (so
    a 4-language study can use "order 1"). A custom order must be a permutation of the run's
    languages. A random order is a permutation drawn from its seed.
    """
    if spec.builtin is not None:
        unknown = [x for x in languages if x not in PAPER_ORDERS[spec.builtin]]
        if unknown:
            raise OrderError(
                f"paper order {spec.builtin} has no {unknown[0]}; check data.languages "
                "(MASSIVE locale codes such as de-DE, sl-SL)"
            )
        keep = set(languages)
        return tuple(x for x in PAPER_ORDERS[spec.builtin] if x in keep)
    if spec.custom is not None:
        order = spec.custom
        missing = [x for x in languages if x not in order]
        extra = [x for x in order if x not in languages]
        dups = sorted({x for x in order if order.count(x) > 1})
        if missing or extra or dups:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if extra:
                parts.append(f"not in data.languages: {', '.join(extra)}")
            if dups:
                parts.append(f"repeated {', '.join(dups)}")
            raise OrderError(f"not a permutation of data.languages ({'; '.join(parts)})")
        return order
    rng = random.Random(spec.random_seed)
    order = list(languages)
    rng.shuffle(order)
    return tuple(order)


def _digest(order: tuple[str, ...]) -> str:
    return hashlib.sha256(",".join(order).encode()).hexdigest()[:8]


def advised_name(order: tuple[str, ...]) -> str:
    """The run key's name of an advised order: ``advised-<8 hex of the order>``."""
    return "advised-" + _digest(tuple(order))


def order_name(spec: OrderSpec | None) -> str:
    """The run key's order: "1".."5", "custom-<8hex>", "advised-<8hex>" or "random-<seed>"."""
    if spec is None:
        return ""
    if spec.builtin is not None:
        return str(spec.builtin)
    if spec.custom is not None:
        if spec.advised is not None:
            return advised_name(spec.custom)
        return "custom-" + _digest(spec.custom)
    return f"random-{spec.random_seed}"
