"""The 52 MASSIVE 1.1 locales: language name, script, family, Joshi class, vitality groups.

The facts come from ``shared/reference/languages.md`` (script: ISO 15924; family: standard
genealogical classification; Joshi class: the 0-5 resource taxonomy of Joshi et al. 2020).
Locale codes are MASSIVE's own, so Slovenian is ``sl-SL`` (not the ISO ``sl-SI``).

Vitality groups (the paper's Table 1: Low / Mid / High) are a mapping from a group name to the
Joshi classes it holds. The default, ``High = 4-5, Mid = 3, Low = 0-2``, is the reading that
puts the paper's named high-vitality languages (zh-CN, ja-JP, hi-IN) in High; pass another
mapping (or a spec string such as ``"High=5,Mid=3-4,Low=0-2"``) to change it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from hpc_forget.errors import LanguageError, split_pair


@dataclass(frozen=True)
class Language:
    locale: str
    name: str
    script: str  # ISO 15924
    family: str
    joshi: int  # Joshi et al. (2020) class, 0..5


# locale, language, script, family, Joshi class
_TABLE = """
af-ZA|Afrikaans|Latn|Indo-European|3
am-ET|Amharic|Ethi|Afro-Asiatic|2
ar-SA|Arabic|Arab|Afro-Asiatic|5
az-AZ|Azerbaijani|Latn|Turkic|1
bn-BD|Bengali|Beng|Indo-European|3
ca-ES|Catalan|Latn|Indo-European|4
cy-GB|Welsh|Latn|Indo-European|1
da-DK|Danish|Latn|Indo-European|3
de-DE|German|Latn|Indo-European|5
el-GR|Greek|Grek|Indo-European|3
en-US|English|Latn|Indo-European|5
es-ES|Spanish|Latn|Indo-European|5
fa-IR|Persian|Arab|Indo-European|4
fi-FI|Finnish|Latn|Uralic|4
fr-FR|French|Latn|Indo-European|5
he-IL|Hebrew|Hebr|Afro-Asiatic|3
hi-IN|Hindi|Deva|Indo-European|4
hu-HU|Hungarian|Latn|Uralic|4
hy-AM|Armenian|Armn|Indo-European|1
id-ID|Indonesian|Latn|Austronesian|3
is-IS|Icelandic|Latn|Indo-European|2
it-IT|Italian|Latn|Indo-European|4
ja-JP|Japanese|Jpan|Japonic|5
jv-ID|Javanese|Latn|Austronesian|1
ka-GE|Georgian|Geor|Kartvelian|3
km-KH|Khmer|Khmr|Austroasiatic|1
kn-IN|Kannada|Knda|Dravidian|1
ko-KR|Korean|Hang|Koreanic|4
lv-LV|Latvian|Latn|Indo-European|3
ml-IN|Malayalam|Mlym|Dravidian|1
mn-MN|Mongolian|Cyrl|Mongolic|1
ms-MY|Malay|Latn|Austronesian|3
my-MM|Burmese|Mymr|Sino-Tibetan|1
nb-NO|Norwegian Bokmål|Latn|Indo-European|1
nl-NL|Dutch|Latn|Indo-European|4
pl-PL|Polish|Latn|Indo-European|4
pt-PT|Portuguese|Latn|Indo-European|4
ro-RO|Romanian|Latn|Indo-European|3
ru-RU|Russian|Cyrl|Indo-European|4
sl-SL|Slovenian|Latn|Indo-European|3
sq-AL|Albanian|Latn|Indo-European|1
sv-SE|Swedish|Latn|Indo-European|4
sw-KE|Swahili|Latn|Niger-Congo|2
ta-IN|Tamil|Taml|Dravidian|3
te-IN|Telugu|Telu|Dravidian|1
th-TH|Thai|Thai|Kra-Dai|3
tl-PH|Tagalog|Latn|Austronesian|3
tr-TR|Turkish|Latn|Turkic|4
ur-PK|Urdu|Arab|Indo-European|3
vi-VN|Vietnamese|Latn|Austroasiatic|4
zh-CN|Chinese (Simplified)|Hans|Sino-Tibetan|5
zh-TW|Chinese (Traditional)|Hant|Sino-Tibetan|5
"""


def _parse_table(text: str) -> dict[str, Language]:
    out: dict[str, Language] = {}
    for line in text.strip().splitlines():
        locale, name, script, family, joshi = line.split("|")
        out[locale] = Language(locale, name, script, family, int(joshi))
    return out


LANGUAGES: Mapping[str, Language] = MappingProxyType(_parse_table(_TABLE))
LOCALES: tuple[str, ...] = tuple(sorted(LANGUAGES))

VITALITY_ORDER: tuple[str, ...] = ("Low", "Mid", "High")
DEFAULT_VITALITY: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {"Low": (0, 1, 2), "Mid": (3,), "High": (4, 5)}
)
UNKNOWN = "unknown"


def language(locale: str) -> Language:
    """The facts of ``locale``; LanguageError if it is not one of MASSIVE's 52 codes."""
    try:
        return LANGUAGES[locale]
    except KeyError:
        hint = " (MASSIVE writes Slovenian as sl-SL)" if locale == "sl-SI" else ""
        raise LanguageError(
            f"unknown locale {locale!r}{hint}: use a MASSIVE code such as de-DE "
            "(see hpc_forget.study.languages.LOCALES)"
        ) from None


def script(locale: str) -> str:
    """The ISO 15924 script code of ``locale`` (``Latn``, ``Cyrl``, ``Hans``, ...)."""
    return language(locale).script


def is_latin(locale: str) -> bool:
    """True when ``locale`` is written in Latin script."""
    return language(locale).script == "Latn"


def script_group(locale: str) -> str:
    """``"Latin"`` or ``"non-Latin"``: the grouping of the paper's section 5.2."""
    return "Latin" if is_latin(locale) else "non-Latin"


def family(locale: str) -> str:
    """The language family of ``locale`` (``Indo-European``, ``Sino-Tibetan``, ...)."""
    return language(locale).family


def joshi_class(locale: str) -> int:
    """The Joshi et al. (2020) resource class of ``locale``, 0..5."""
    return language(locale).joshi


def check_vitality(groups: Mapping[str, Iterable[int]]) -> dict[str, tuple[int, ...]]:
    """Validate a vitality grouping: every Joshi class 0..5 in exactly one group."""
    out = {str(name): tuple(sorted(int(c) for c in classes)) for name, classes in groups.items()}
    seen: dict[int, str] = {}
    for name, classes in out.items():
        for c in classes:
            if c not in range(6):
                raise LanguageError(f"vitality group {name!r} has Joshi class {c}: use 0..5")
            if c in seen:
                raise LanguageError(
                    f"Joshi class {c} is in both vitality groups {seen[c]!r} and {name!r}: "
                    "put each class in one group"
                )
            seen[c] = name
    absent = [c for c in range(6) if c not in seen]
    if absent:
        raise LanguageError(
            f"Joshi class(es) {', '.join(map(str, absent))} are in no vitality group: "
            "cover every class 0..5"
        )
    return out


def parse_vitality(spec: str) -> dict[str, tuple[int, ...]]:
    """Parse ``"High=4-5,Mid=3,Low=0-2"`` (ranges and ``+``-joined lists) into a grouping."""
    groups: dict[str, list[int]] = {}
    try:
        for part in spec.split(","):
            name, classes = split_pair(part, "vitality", ValueError)
            if not classes.strip():
                raise ValueError(part)
            items: list[int] = []
            for item in classes.split("+"):
                lo, _, hi = item.strip().partition("-")
                items.extend(range(int(lo), int(hi or lo) + 1))
            groups.setdefault(name, []).extend(items)
    except ValueError:
        raise LanguageError(
            f"cannot read vitality spec {spec!r}: write it like 'High=4-5,Mid=3,Low=0-2'"
        ) from None
    return check_vitality(groups)


def vitality(locale: str, groups: Mapping[str, Iterable[int]] = DEFAULT_VITALITY) -> str:
    """The vitality group of ``locale`` under ``groups`` (default High 4-5, Mid 3, Low 0-2)."""
    c = joshi_class(locale)
    for name, classes in groups.items():
        if c in tuple(classes):
            return name
    raise LanguageError(f"Joshi class {c} of {locale} is in no vitality group: cover 0..5")


GROUPINGS: Mapping[str, Callable[[str], str]] = MappingProxyType(
    {"script": script_group, "family": family, "vitality": vitality}
)


def group_of(
    locale: str, by: str, vitality_groups: Mapping[str, Iterable[int]] | None = None
) -> str:
    """The group of ``locale`` under grouping ``by`` (script/family/vitality); ``"unknown"``
    for locales outside MASSIVE (tiny test languages), so reports never fail on them."""
    if locale not in LANGUAGES:
        return UNKNOWN
    if by == "vitality":
        return vitality(locale, vitality_groups or DEFAULT_VITALITY)
    if by not in GROUPINGS:
        raise LanguageError(f"unknown grouping {by!r}: use one of script, family, vitality")
    return GROUPINGS[by](locale)


def group_locales(
    locales: Iterable[str], by: str, vitality_groups: Mapping[str, Iterable[int]] | None = None
) -> dict[str, list[str]]:
    """Split ``locales`` into groups (keeping their order); see :func:`group_of`."""
    out: dict[str, list[str]] = {}
    for loc in locales:
        out.setdefault(group_of(loc, by, vitality_groups), []).append(loc)
    return out
