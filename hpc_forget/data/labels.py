"""The fixed label map (55 slot types, 111 BIO labels) and MASSIVE's annot_utt -> word-level BIO."""

from __future__ import annotations

import re

from hpc_forget.errors import DataError

# The 55 MASSIVE slot types, sorted; derived once from en-US.jsonl (MASSIVE 1.1) and fixed here.
SLOT_TYPES: tuple[str, ...] = (
    "alarm_type",
    "app_name",
    "artist_name",
    "audiobook_author",
    "audiobook_name",
    "business_name",
    "business_type",
    "change_amount",
    "coffee_type",
    "color_type",
    "cooking_type",
    "currency_name",
    "date",
    "definition_word",
    "device_type",
    "drink_type",
    "email_address",
    "email_folder",
    "event_name",
    "food_type",
    "game_name",
    "game_type",
    "general_frequency",
    "house_place",
    "ingredient",
    "joke_type",
    "list_name",
    "meal_type",
    "media_type",
    "movie_name",
    "movie_type",
    "music_album",
    "music_descriptor",
    "music_genre",
    "news_topic",
    "order_type",
    "person",
    "personal_info",
    "place_name",
    "player_setting",
    "playlist_name",
    "podcast_descriptor",
    "podcast_name",
    "radio_name",
    "relation",
    "song_name",
    "sport_type",
    "time",
    "time_zone",
    "timeofday",
    "transport_agency",
    "transport_descriptor",
    "transport_name",
    "transport_type",
    "weather_descriptor",
)

# "O", then B-<t>, I-<t> for each slot type in SLOT_TYPES order: 111 labels, ids = positions.
LABELS: tuple[str, ...] = ("O",) + tuple(f"{p}-{t}" for t in SLOT_TYPES for p in ("B", "I"))

SPLITS: tuple[str, ...] = ("train", "dev", "test")
# Locales the official conversion splits into characters (keeping ASCII runs whole).
CHAR_SPLIT_LOCALES: frozenset[str] = frozenset({"ja-JP", "zh-CN", "zh-TW"})

_SLOT_SET = frozenset(SLOT_TYPES)
_SPLIT_ALIASES = {"train": "train", "dev": "dev", "validation": "dev", "test": "test"}

_CHAR_WORD = re.compile(r"[^\s\x80-\U0010ffff]+|\S")  # an ASCII run, or one non-ASCII char


class RowError(Exception):
    """Why one row is invalid (a short reason, no location)."""


# --------------------------------------------------------------------------------------------
# label map and the annot_utt -> BIO conversion


def label2id() -> dict[str, int]:
    """The fixed label map: ``LABELS[i] -> i`` (``O`` is 0)."""
    return {label: i for i, label in enumerate(LABELS)}


def id2label() -> dict[int, str]:
    """The inverse of :func:`label2id`."""
    return dict(enumerate(LABELS))


def split_words(text: str, locale: str) -> list[str]:
    """Words as MASSIVE defines them: whitespace-separated, except ja-JP, zh-CN and zh-TW where
    each non-ASCII character is a word and each run of ASCII non-space characters is one word."""
    if locale in CHAR_SPLIT_LOCALES:
        return _CHAR_WORD.findall(text)
    return text.split()


def _segments(annot: str) -> list[tuple[str, str | None]]:
    """Split annot_utt into (text, slot type or None) pieces; raise RowError if malformed."""
    out: list[tuple[str, str | None]] = []
    pos, n = 0, len(annot)
    while pos < n:
        lb = annot.find("[", pos)
        rb = annot.find("]", pos)
        if rb != -1 and (lb == -1 or rb < lb):
            raise RowError(f"unbalanced ']' at character {rb + 1} of annot_utt")
        if lb == -1:
            out.append((annot[pos:], None))
            break
        if lb > pos:
            out.append((annot[pos:lb], None))
        if rb == -1:
            raise RowError(f"unbalanced '[' at character {lb + 1} of annot_utt (never closed)")
        nested = annot.find("[", lb + 1, rb)
        if nested != -1:
            raise RowError(f"unbalanced '[' at character {lb + 1} of annot_utt (nested span)")
        slot, colon, value = annot[lb + 1 : rb].partition(":")
        slot = slot.strip()
        if not colon:
            raise RowError(f"span at character {lb + 1} of annot_utt has no 'type : value' form")
        if slot not in _SLOT_SET:
            raise RowError(
                f"unknown slot type {short_repr(slot)} (not one of the 55 MASSIVE types)"
            )
        if not value.strip():
            raise RowError(f"empty span [{slot} : ] at character {lb + 1} of annot_utt")
        out.append((value, slot))
        pos = rb + 1
    return out


def bio_tags(annot: str, utt: str, locale: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    words: list[str] = []
    tags: list[str] = []
    for text, slot in _segments(annot):
        piece = split_words(text, locale)
        words.extend(piece)
        if slot is None:
            tags.extend(["O"] * len(piece))
        else:
            tags.append(f"B-{slot}")
            tags.extend([f"I-{slot}"] * (len(piece) - 1))
    utt_words = split_words(utt, locale)
    if words != utt_words:
        if not utt_words:
            raise RowError("utt has no words")
        i = next(
            (k for k, (a, b) in enumerate(zip(words, utt_words, strict=False)) if a != b), None
        )
        if i is None:
            raise RowError(f"annot_utt has {len(words)} words, utt has {len(utt_words)}")
        raise RowError(
            f"annot_utt and utt differ at word {i + 1} "
            f"({short_repr(words[i])} vs {short_repr(utt_words[i])})"
        )
    if not words:
        raise RowError("utt has no words")
    return tuple(words), tuple(tags)


def annot_to_bio(annot_utt: str, utt: str, locale: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Convert one MASSIVE annotation to (words, BIO tags).

    A span ``[type : value]`` gives ``B-type`` to its first word and ``I-type`` to the others;
    words outside spans get ``O``. The words recovered from ``annot_utt`` must equal the words of
    ``utt``. Raises DataError (one line, no location) if the annotation is invalid.
    """
    try:
        return bio_tags(annot_utt, utt, locale)
    except RowError as e:
        raise DataError(str(e)) from None


def short_repr(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def canonical_split(name: object) -> str | None:
    return _SPLIT_ALIASES.get(name) if isinstance(name, str) else None
