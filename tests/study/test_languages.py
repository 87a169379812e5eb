"""The 52 MASSIVE locales: facts against tests/assets/languages.md, vitality groupings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hpc_forget.study import languages as L

ROW = re.compile(r"^\| ([a-z]{2}-[A-Z]{2}) \| ([^|]+) \| (\w{4}) \| ([^|]+) \| (\d) \|$")


def test_52_locales_29_latin_23_not():
    assert len(L.LANGUAGES) == 52
    assert len(L.LOCALES) == 52 and list(L.LOCALES) == sorted(L.LOCALES)
    latin = [x for x in L.LOCALES if L.is_latin(x)]
    assert len(latin) == 29
    assert len(L.LOCALES) - len(latin) == 23


def test_same_locales_as_the_paper_orders():
    from hpc_forget.study.orders import MASSIVE_LOCALES

    assert set(L.LOCALES) == set(MASSIVE_LOCALES)


def test_every_row_matches_the_reference_file(reference_dir: Path):
    text = (reference_dir / "languages.md").read_text(encoding="utf-8")
    rows = [m.groups() for m in map(ROW.match, text.splitlines()) if m]
    assert len(rows) == 52
    for locale, name, script, family, joshi in rows:
        lang = L.language(locale)
        assert (lang.name, lang.script, lang.family, lang.joshi) == (
            name.strip(),
            script,
            family.strip(),
            int(joshi),
        ), locale
    assert "29 locales are written in Latin script, 23 are not" in text


@pytest.mark.parametrize(
    ("locale", "name", "script", "family", "joshi"),
    [
        ("sl-SL", "Slovenian", "Latn", "Indo-European", 3),
        ("zh-TW", "Chinese (Traditional)", "Hant", "Sino-Tibetan", 5),
        ("hi-IN", "Hindi", "Deva", "Indo-European", 4),
        ("nb-NO", "Norwegian Bokmål", "Latn", "Indo-European", 1),
        ("am-ET", "Amharic", "Ethi", "Afro-Asiatic", 2),
        ("ja-JP", "Japanese", "Jpan", "Japonic", 5),
    ],
)
def test_rows(locale, name, script, family, joshi):
    lang = L.language(locale)
    assert (lang.name, L.script(locale), L.family(locale), L.joshi_class(locale)) == (
        name,
        script,
        family,
        joshi,
    )


def test_default_vitality_high_4_5_mid_3_low_0_2():
    assert dict(L.DEFAULT_VITALITY) == {"Low": (0, 1, 2), "Mid": (3,), "High": (4, 5)}
    # the paper names zh-CN, ja-JP and hi-IN as high-vitality
    assert {L.vitality(x) for x in ("zh-CN", "ja-JP", "hi-IN")} == {"High"}
    assert L.vitality("af-ZA") == "Mid"
    assert L.vitality("am-ET") == "Low"
    groups = L.group_locales(L.LOCALES, "vitality")
    assert {g: len(v) for g, v in groups.items()} == {"Low": 15, "Mid": 15, "High": 22}


def test_vitality_is_configurable():
    spec = L.parse_vitality("High=5, Mid=3-4, Low=0-2")
    assert spec == {"High": (5,), "Mid": (3, 4), "Low": (0, 1, 2)}
    assert L.vitality("hi-IN", spec) == "Mid"
    assert L.vitality("de-DE", spec) == "High"
    assert L.parse_vitality("A=0+2+4,B=1+3+5") == {"A": (0, 2, 4), "B": (1, 3, 5)}


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("High=4-5,Mid=3", "0, 1, 2 are in no vitality group"),
        ("High=3-5,Mid=3,Low=0-2", "both vitality groups"),
        ("High=4-9,Mid=3,Low=0-2", "use 0..5"),
        ("High:4-5", "cannot read vitality spec"),
        ("High=a", "cannot read vitality spec"),
    ],
)
def test_bad_vitality_specs_are_one_line_errors(spec, words):
    with pytest.raises(L.LanguageError) as exc:
        L.parse_vitality(spec)
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_unknown_locale():
    with pytest.raises(L.LanguageError, match="sl-SL"):
        L.language("sl-SI")
    with pytest.raises(L.LanguageError, match="unknown locale 'xx-XX'"):
        L.is_latin("xx-XX")
    # reports never fail on test languages outside MASSIVE
    assert L.group_of("xx-XX", "script") == L.UNKNOWN
    assert L.group_locales(["de-DE", "xx-XX", "ru-RU"], "script") == {
        "Latin": ["de-DE"],
        "unknown": ["xx-XX"],
        "non-Latin": ["ru-RU"],
    }
    with pytest.raises(L.LanguageError, match="unknown grouping"):
        L.group_of("de-DE", "continent")


def test_groupings_by_script_and_family():
    assert L.script_group("de-DE") == "Latin" and L.script_group("zh-CN") == "non-Latin"
    fam = L.group_locales(L.LOCALES, "family")
    assert len(fam["Indo-European"]) == 26
    assert sorted(fam["Sino-Tibetan"]) == ["my-MM", "zh-CN", "zh-TW"]
    assert sum(len(v) for v in fam.values()) == 52
