"""Tests for hpc_forget.data: sources, annot_utt -> BIO, label map, invalid rows, subsampling."""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

import pytest

from hpc_forget.data import corpus as DC
from hpc_forget.data import labels as DL
from hpc_forget.data import samples as DS
from hpc_forget.data import sources as DSrc
from hpc_forget.data.corpus import Example
from hpc_forget.data.inspection import format_inspect, inspect_data
from hpc_forget.data.labels import LABELS, SLOT_TYPES, annot_to_bio, label2id, split_words
from hpc_forget.data.samples import make_samples
from hpc_forget.data.sources import SAMPLES_DIR, load_massive
from hpc_forget.data.splits import prepare_splits, subsample
from hpc_forget.errors import DataError

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "massive"  # hand-written ja-JP / zh-CN rows
HINT = " — fix the row, or set data.skip_invalid: true to skip invalid rows"


@pytest.fixture(scope="module")
def real_dir(massive_dir: Path) -> Path:
    """The real MASSIVE files (tests/assets/massive, decompressed by conftest's `massive_dir`)."""
    return massive_dir


@pytest.fixture(scope="module")
def real(real_dir: Path) -> DC.Corpus:
    return load_massive(real_dir)


@pytest.fixture(scope="module")
def samples() -> DC.Corpus:
    return load_massive("samples")


def sample_lines(locale: str, n: int) -> list[bytes]:
    return (SAMPLES_DIR / f"{locale}.jsonl").read_bytes().splitlines()[:n]


def row(**kw: object) -> str:
    base = {
        "id": "1",
        "locale": "en-US",
        "partition": "train",
        "scenario": "alarm",
        "intent": "alarm_set",
        "utt": "wake me up at five am",
        "annot_utt": "wake me up at [time : five am]",
    }
    base.update(kw)
    return json.dumps({k: v for k, v in base.items() if v is not None}, ensure_ascii=False)


def write_locale(folder: Path, locale: str, lines: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{locale}.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ label map


def test_label_map_is_fixed_and_sorted() -> None:
    assert len(SLOT_TYPES) == 55 and list(SLOT_TYPES) == sorted(set(SLOT_TYPES))
    assert len(LABELS) == 111 and LABELS[:3] == ("O", "B-alarm_type", "I-alarm_type")
    assert LABELS[-1] == "I-weather_descriptor"
    ids = label2id()
    assert ids["O"] == 0 and ids["B-date"] == 1 + 2 * SLOT_TYPES.index("date")
    assert DL.id2label() == {i: label for label, i in ids.items()}


# ------------------------------------------------------------------------------ real data


def test_real_data_converts_completely(real: DC.Corpus) -> None:
    assert real.invalid == []
    assert real.locales == ["de-DE", "en-US", "sw-KE", "th-TH"]
    for loc in ("en-US", "th-TH"):
        assert real.counts()[loc] == {"train": 11514, "dev": 2033, "test": 2974}
    for loc in ("de-DE", "sw-KE"):
        assert real.counts()[loc] == {"train": 0, "dev": 2033, "test": 2974}
        assert real.split(loc, "train") == []
    en = {t[2:] for s in DL.SPLITS for e in real.split("en-US", s) for t in e.tags if t != "O"}
    assert en == set(SLOT_TYPES)
    labels = set(LABELS)
    for loc in real.locales:
        for s in DL.SPLITS:
            for e in real.split(loc, s):
                assert len(e.words) == len(e.tags) > 0
                assert labels.issuperset(e.tags)


def test_real_data_hand_checked(real: DC.Corpus) -> None:
    en = {e.id: e for e in real.split("en-US", "test")}
    assert en["0"].words == ("wake", "me", "up", "at", "five", "am", "this", "week")
    assert en["0"].tags == ("O", "O", "O", "O", "B-time", "I-time", "B-date", "I-date")
    th = {e.id: e for e in real.split("th-TH", "test")}
    # "ปลุกฉัน ตอน [time : ตีห้า] [date : สัปดาห์นี้]"
    assert th["0"].words == ("ปลุกฉัน", "ตอน", "ตีห้า", "สัปดาห์นี้")
    assert th["0"].tags == ("O", "O", "B-time", "B-date")
    assert real.split("th-TH", "validation") == real.split("th-TH", "dev")


def test_real_tarball_equals_folder(real_dir: Path, real: DC.Corpus, tmp_path: Path) -> None:
    tar_path = tmp_path / "amazon-massive-dataset-1.1.tar.gz"
    with tarfile.open(tar_path, "w:gz", compresslevel=1) as tar:
        for loc in real.locales:
            tar.add(real_dir / f"{loc}.jsonl", arcname=f"1.1/data/{loc}.jsonl")
    assert load_massive(tar_path) == real
    assert load_massive(tar_path, ["sw-KE"]).examples["sw-KE"] == real.examples["sw-KE"]


# ------------------------------------------------------------------------------ conversion


@pytest.mark.parametrize(
    ("locale", "utt", "annot", "words", "tags"),
    [
        (
            "en-US",
            "wake me up at five am this week",
            "wake me up at [time : five am] [date : this week]",
            "wake me up at five am this week",
            "O O O O B-time I-time B-date I-date",
        ),
        ("en-US", "quiet", "quiet", "quiet", "O"),
        (  # adjacent spans of one type each start with B-; a ':' inside the value is kept
            "en-US",
            "today tomorrow at 5:30",
            "[date : today] [date : tomorrow] at [time : 5:30]",
            "today tomorrow at 5:30",
            "B-date B-date O B-time",
        ),
        (
            "th-TH",
            "ปลุกฉัน ตอน เก้าโมงเช้า วันศุกร์",
            "ปลุกฉัน ตอน [time : เก้าโมงเช้า] [date : วันศุกร์]",
            "ปลุกฉัน ตอน เก้าโมงเช้า วันศุกร์",
            "O O B-time B-date",
        ),
        (  # the official code leaves app_name open after "spotify]"; the span closes here
            "ja-JP",
            "spotify で音楽",
            "[app_name : spotify] で音楽",
            "spotify で 音 楽",
            "B-app_name O O O",
        ),
        (
            "ja-JP",
            "明日7時にアラーム",
            "[date : 明日][time : 7時]にアラーム",
            "明 日 7 時 に ア ラ ー ム",
            "B-date I-date B-time I-time O O O O O",
        ),
        (  # ASCII runs stay whole even when glued to CJK characters
            "zh-CN",
            "用spotify播放jazz音乐",
            "用[app_name : spotify]播放[music_genre : jazz]音乐",
            "用 spotify 播 放 jazz 音 乐",
            "O B-app_name O O B-music_genre O O",
        ),
        (
            "zh-TW",
            "what's 明天的 weather",
            "what's [date : 明天]的 weather",
            "what's 明 天 的 weather",
            "O B-date I-date O O",
        ),
    ],
)
def test_annot_to_bio(locale: str, utt: str, annot: str, words: str, tags: str) -> None:
    assert annot_to_bio(annot, utt, locale) == (tuple(words.split()), tuple(tags.split()))


def test_split_words_char_locales() -> None:
    assert split_words("iPhone的设置 ok", "zh-CN") == ["iPhone", "的", "设", "置", "ok"]
    assert split_words("iPhone的设置 ok", "en-US") == ["iPhone的设置", "ok"]
    assert split_words("明日\u30007:30に", "ja-JP") == ["明", "日", "7:30", "に"]


def test_char_split_fixture_files() -> None:
    corpus = load_massive(FIXTURES)
    assert corpus.locales == ["ja-JP", "zh-CN"] and corpus.invalid == []
    ja = {e.id: e for s in DL.SPLITS for e in corpus.split("ja-JP", s)}
    assert ja["2"].words[:3] == ("spotify", "で", "音") and ja["2"].tags[:3] == (
        "B-app_name",
        "O",
        "O",
    )
    assert ja["3"].words[:3] == ("taylor", "swift", "の")
    assert ja["3"].tags[:3] == ("B-artist_name", "I-artist_name", "O")
    zh = {e.id: e for s in DL.SPLITS for e in corpus.split("zh-CN", s)}
    assert zh["1"].tags == ("O", "O", "B-artist_name", "I-artist_name", "I-artist_name", "O", "O")
    assert zh["4"].words == ("打", "开", "wifi", "吧")
    assert zh["4"].tags == ("O", "O", "B-device_type", "O")


@pytest.mark.parametrize(
    ("locale", "utt", "annot", "reason"),
    [
        (
            "en-US",
            "a b",
            "a [time : b",
            "unbalanced '[' at character 3 of annot_utt (never closed)",
        ),
        ("en-US", "a b", "a time : b]", "unbalanced ']' at character 11 of annot_utt"),
        ("en-US", "a b c", "a [time : b [date : c]]", "unbalanced '[' at character 3"),
        ("en-US", "a b", "a [colour : b]", "unknown slot type 'colour'"),
        ("en-US", "a", "a [time : ]", "empty span [time : ]"),
        ("en-US", "a b", "a [time b]", "has no 'type : value' form"),
        ("en-US", "a b", "a [time : c]", "annot_utt and utt differ at word 2 ('c' vs 'b')"),
        ("en-US", "a b", "a [time : b] c", "annot_utt has 3 words, utt has 2"),
        ("en-US", "", "", "utt has no words"),
        ("zh-CN", "abcdef", "[app_name : abc]def", "differ at word 1 ('abc' vs 'abcdef')"),
    ],
)
def test_annot_to_bio_rejects(locale: str, utt: str, annot: str, reason: str) -> None:
    with pytest.raises(DataError) as err:
        annot_to_bio(annot, utt, locale)
    assert reason in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------ source forms


LOCALES = ["de-DE", "en-US", "th-TH"]


@pytest.fixture(scope="module")
def small_rows() -> dict[str, list[bytes]]:
    """Real rows (from the shipped samples), 60 per locale, all three splits for en/th."""
    return {loc: sample_lines(loc, 60) for loc in LOCALES}


@pytest.fixture(scope="module")
def folder_corpus(small_rows, tmp_path_factory) -> DC.Corpus:
    folder = tmp_path_factory.mktemp("folder")
    for loc, lines in small_rows.items():
        (folder / f"{loc}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (folder / "README.md").write_text("not data\n")
    corpus = load_massive(folder)
    assert corpus.form == "folder" and corpus.locales == LOCALES
    assert {s for loc in LOCALES for s in DL.SPLITS if corpus.split(loc, s)} == set(DL.SPLITS)
    return corpus


def hf_rows(lines: list[bytes], split: str, drop_partition: bool) -> list[dict]:
    keep = ("id", "locale", "partition", "scenario", "intent", "utt", "annot_utt")
    rows = [json.loads(x) for x in lines]
    out = []
    for r in rows:
        if r["partition"] == split:
            out.append({k: r[k] for k in keep if not (drop_partition and k == "partition")})
    return out


def hf_dict(lines: list[bytes], drop_partition: bool = True):
    from datasets import Dataset, DatasetDict

    names = {"train": "train", "validation": "dev", "test": "test"}
    return DatasetDict(
        {k: Dataset.from_list(hf_rows(lines, s, drop_partition)) for k, s in names.items()}
    )


def test_tarball_equals_folder(small_rows, folder_corpus, tmp_path) -> None:
    tar_path = tmp_path / "amazon-massive-dataset-1.1.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        for name, blob in [("1.1/LICENSE", b"CC BY 4.0\n")] + [
            (f"1.1/data/{loc}.jsonl", b"\n".join(lines)) for loc, lines in small_rows.items()
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    corpus = load_massive(tar_path)
    assert corpus.form == "tarball" and corpus == folder_corpus
    assert (
        load_massive(str(tar_path), ["en-US"]).examples["en-US"]
        == (folder_corpus.examples["en-US"])
    )


def test_hub_equals_folder(small_rows, folder_corpus, monkeypatch) -> None:
    import datasets

    calls = []

    def fake_load_dataset(name, *, data_files, revision):
        config = data_files["train"].split("/")[0]
        calls.append((name, config, revision, data_files))
        return hf_dict(small_rows[config])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    corpus = load_massive("AmazonScience/massive", LOCALES)
    # never the loading script (datasets 4+ refuses it): the Hub's parquet conversion
    assert calls == [
        ("AmazonScience/massive", loc, "refs/convert/parquet",
         {s: f"{loc}/{s}/*.parquet" for s in ("train", "validation", "test")})
        for loc in LOCALES
    ]  # fmt: skip
    assert corpus.form == "hub" and corpus == folder_corpus


def test_hub_all_locales_and_errors(small_rows, monkeypatch) -> None:
    import datasets
    from datasets import concatenate_datasets

    every = {loc: hf_dict(small_rows[loc]) for loc in LOCALES}
    merged = datasets.DatasetDict(
        {k: concatenate_datasets([every[loc][k] for loc in LOCALES]) for k in every["en-US"]}
    )

    def all_configs(name, *, data_files, revision):
        assert data_files["train"] == "all_1.1/train/*.parquet"
        return merged

    monkeypatch.setattr(datasets, "load_dataset", all_configs)
    corpus = load_massive("hf:AmazonScience/massive")
    assert corpus.locales == LOCALES

    def broken(name, **kw):
        raise ValueError("BuilderConfig 'xx-XX' not found.\nAvailable: ['en-US', ...]")

    monkeypatch.setattr(datasets, "load_dataset", broken)
    with pytest.raises(DataError) as err:
        load_massive("AmazonScience/massive", ["xx-XX"])
    assert str(err.value) == (
        "AmazonScience/massive: cannot load locale xx-XX from the Hugging Face Hub (ValueError: "
        "BuilderConfig 'xx-XX' not found.) — check the dataset id and locale, or pass a local "
        "folder or .tar.gz"
    )

    rows = hf_rows(small_rows["en-US"], "train", True)
    rows[1]["annot_utt"] = "[nope : x]"
    bad = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)})
    monkeypatch.setattr(datasets, "load_dataset", lambda name, **kw: bad)
    with pytest.raises(DataError) as err:
        load_massive("AmazonScience/massive", ["en-US"])
    assert str(err.value) == (
        "AmazonScience/massive[en-US/train] row 1: unknown slot type 'nope' "
        "(not one of the 55 MASSIVE types)" + HINT
    )


def test_save_to_disk_equals_folder(small_rows, folder_corpus, tmp_path) -> None:
    from datasets import Dataset, DatasetDict, concatenate_datasets

    every = {loc: hf_dict(small_rows[loc], drop_partition=False) for loc in LOCALES}
    merged = DatasetDict(
        {k: concatenate_datasets([every[loc][k] for loc in LOCALES]) for k in every["en-US"]}
    )
    merged.save_to_disk(str(tmp_path / "dd"))
    corpus = load_massive(tmp_path / "dd")
    assert corpus.form == "disk" and corpus == folder_corpus
    only = load_massive(tmp_path / "dd", ["th-TH"])
    assert only.locales == ["th-TH"] and only.examples["th-TH"] == folder_corpus.examples["th-TH"]
    # one Dataset (state.json) whose partition column carries the split
    flat = [json.loads(x) for loc in LOCALES for x in small_rows[loc]]
    keep = ("id", "locale", "partition", "utt", "annot_utt")
    Dataset.from_list([{k: r[k] for k in keep} for r in flat]).save_to_disk(str(tmp_path / "d"))
    assert load_massive(tmp_path / "d") == folder_corpus
    with pytest.raises(DataError) as err:
        load_massive(tmp_path / "d", ["fr-FR"])
    assert str(err.value) == (
        f"{tmp_path / 'd'}: locale fr-FR not found; available: de-DE, en-US, th-TH — "
        "pick locales from this list"
    )


def test_samples_source(samples) -> None:
    assert samples.form == "samples" and samples.invalid == []
    assert samples == load_massive(SAMPLES_DIR) == load_massive("builtin:samples")
    assert samples.counts() == {
        "de-DE": {"train": 0, "dev": 600, "test": 300},
        "en-US": {"train": 2000, "dev": 300, "test": 300},
        "sw-KE": {"train": 0, "dev": 600, "test": 300},
        "th-TH": {"train": 2000, "dev": 300, "test": 300},
    }
    ids = {
        (loc, s): {e.id for e in samples.split(loc, s)}
        for loc in samples.locales
        for s in DL.SPLITS
    }
    assert ids["en-US", "train"] == ids["th-TH", "train"]
    assert ids["en-US", "dev"] == ids["th-TH", "dev"] < ids["de-DE", "dev"] == ids["sw-KE", "dev"]
    assert ids["en-US", "test"] == ids["th-TH", "test"] == ids["de-DE", "test"]
    total = sum(p.stat().st_size for p in SAMPLES_DIR.glob("*.jsonl"))
    assert total < 3_000_000
    readme = (SAMPLES_DIR / "README.md").read_text()
    assert "CC BY 4.0" in readme and "make_samples" in readme


def test_single_file_and_extracted_tarball_layout(small_rows, tmp_path) -> None:
    path = tmp_path / "1.1" / "data" / "en-US.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\n".join(small_rows["en-US"]))
    one = load_massive(path)
    assert one.form == "file" and one.locales == ["en-US"]
    assert load_massive(tmp_path) == one


# ------------------------------------------------------------------------------ bad inputs


GOOD = row(id="0", utt="stop", annot_utt="stop")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"id": "1", "utt": ', "bad JSON (Expecting value at column 20)"),
        ("[1, 2]", "row is a JSON list, not an object"),
        (
            row(annot_utt="wake me up at [hour : five am]"),
            "unknown slot type 'hour' (not one of the 55 MASSIVE types)",
        ),
        (
            row(annot_utt="wake me up at [time : five am"),
            "unbalanced '[' at character 15 of annot_utt (never closed)",
        ),
        (
            row(annot_utt="wake me up at time : five am]"),
            "unbalanced ']' at character 29 of annot_utt",
        ),
        (
            row(annot_utt="wake me up at [time : ] five am"),
            "empty span [time : ] at character 15 of annot_utt",
        ),
        (
            row(annot_utt="wake me at [time : five am]"),
            "annot_utt and utt differ at word 3 ('at' vs 'up')",
        ),
        (row(utt=None), "missing field 'utt'"),
        (row(annot_utt=None), "missing field 'annot_utt'"),
        (row(partition=None), "missing field 'partition'"),
        (row(partition="hidden"), "bad partition 'hidden' (expected train, dev or test)"),
        (row(locale="de-DE"), "locale 'de-DE' in the en-US data"),
        (row(id="0"), "duplicate id '0' (first at {path}:1)"),
    ],
)
def test_bad_rows(tmp_path: Path, line: str, reason: str) -> None:
    path = write_locale(tmp_path, "en-US", [GOOD, line])
    with pytest.raises(DataError) as err:
        load_massive(tmp_path)
    msg = str(err.value)
    assert msg == f"{path}:2: {reason.format(path=path)}{HINT}"
    assert "\n" not in msg
    corpus = load_massive(tmp_path, skip_invalid=True)
    assert [e.id for e in corpus.split("en-US", "train")] == ["0"]
    [bad] = corpus.invalid
    assert (bad.file, bad.line, bad.reason) == (str(path), 2, reason.format(path=path))
    assert bad.id == ("" if reason.startswith(("bad JSON", "row is")) else json.loads(line)["id"])


def test_blank_lines_are_not_rows(tmp_path: Path) -> None:
    path = write_locale(tmp_path, "en-US", [GOOD, "", "   ", row(utt="x y", annot_utt="x")])
    with pytest.raises(DataError, match=rf"^{path}:4: annot_utt has 1 words, utt has 2 "):
        load_massive(tmp_path)


def test_missing_sources(tmp_path: Path) -> None:
    write_locale(tmp_path / "m", "en-US", [GOOD])
    write_locale(tmp_path / "m", "th-TH", [row(locale="th-TH")])
    with pytest.raises(DataError) as err:
        load_massive(tmp_path / "m", ["en-US", "ja-JP", "zh-CN"])
    assert str(err.value) == (
        f"{tmp_path / 'm'}: locales ja-JP, zh-CN not found; available: en-US, th-TH — "
        "pick locales from this list"
    )
    missing = tmp_path / "nope" / "massive"
    with pytest.raises(DataError) as err:
        load_massive(missing)
    assert str(err.value).startswith(f"{missing}: no such file or folder — pass a folder")
    with pytest.raises(DataError, match=r"^\./massive: no such file or folder"):
        load_massive("./massive")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no MASSIVE locale files \(<locale>.jsonl, e.g. en-US"):
        load_massive(tmp_path / "empty")
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(
        DataError, match=r"broken.tar.gz: not a readable tar archive \(.*\) — expected the official"
    ):
        load_massive(broken)
    corpus = load_massive(tmp_path / "m")
    with pytest.raises(DataError, match=r"locale 'fr-FR' is not loaded; available: en-US, th-TH"):
        corpus.split("fr-FR", "dev")
    with pytest.raises(DataError, match=r"^split 'valid': unknown split — use one of"):
        corpus.split("en-US", "valid")


def test_tarball_missing_locale_and_bad_row(tmp_path: Path) -> None:
    tar_path = tmp_path / "m.tar.gz"
    blob = (GOOD + "\n" + row(annot_utt="[x : y]") + "\n").encode()
    with tarfile.open(tar_path, "w:gz") as tar:
        info = tarfile.TarInfo("1.1/data/en-US.jsonl")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(DataError) as err:
        load_massive(tar_path, ["sw-KE"])
    assert str(err.value).startswith(f"{tar_path}: locale sw-KE not found; available: en-US")
    with pytest.raises(DataError) as err:
        load_massive(tar_path)
    assert str(err.value) == (
        f"{tar_path}[1.1/data/en-US.jsonl]:2: unknown slot type 'x' "
        "(not one of the 55 MASSIVE types)" + HINT
    )


# ------------------------------------------------------------------------------ subsampling


def toy(n: int, locale: str = "en-US") -> list[Example]:
    return [Example(str(i), locale, "train", ("w",), ("O",)) for i in range(n)]


def test_subsample_deterministic_and_order_free() -> None:
    items = toy(1000)
    shuffled = items[:]
    random.Random(3).shuffle(shuffled)
    a = subsample(items, fraction=0.25, max_examples=100, seed=7)
    assert a == subsample(shuffled, fraction=0.25, max_examples=100, seed=7)
    assert len(a) == 100 and a == sorted(a, key=lambda e: int(e.id))
    assert a != subsample(items, fraction=0.25, max_examples=100, seed=8)
    quarter = {e.id for e in subsample(items, fraction=0.25, seed=7)}
    assert len(quarter) == 250 and {e.id for e in a} <= quarter  # fraction first, then the cap
    assert {e.id for e in subsample(items, fraction=0.1, seed=7)} < quarter
    assert len(subsample(toy(3), fraction=0.01, seed=0)) == 1
    assert subsample(items[:5], max_examples=10, seed=1) == items[:5]
    th = subsample(toy(1000, "th-TH"), fraction=0.25, max_examples=100, seed=7)
    assert [e.id for e in th] == [e.id for e in a]  # parallel locales keep the same ids


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"fraction": 0}, "fraction=0: must be a number in (0, 1] — fix the option"),
        ({"fraction": 1.5}, "fraction=1.5: must be a number in (0, 1] — fix the option"),
        (
            {"max_examples": 0},
            "max_examples=0: must be a positive integer or None — fix the option",
        ),
    ],
)
def test_subsample_bad_options(kw: dict, msg: str) -> None:
    with pytest.raises(DataError) as err:
        subsample(toy(5), seed=0, **kw)
    assert str(err.value) == msg


def test_prepare_splits(samples) -> None:
    with pytest.raises(DataError) as err:
        prepare_splits(samples, "de-DE")
    assert str(err.value) == (
        f"{DSrc.SAMPLES_DIR / 'de-DE.jsonl'}: locale de-DE has no train split — set data.missing_train: split-dev to train on "
        "part of its dev split, or drop the locale"
    )
    de = prepare_splits(samples, "sw-KE", missing_train="split-dev", seed=1)
    dev_ids = {e.id for e in samples.split("sw-KE", "dev")}
    train, dev = {e.id for e in de.train}, {e.id for e in de.dev}
    assert len(train) == len(dev) == 300 and not train & dev and train | dev == dev_ids
    assert all(e.split == "train" for e in de.train) and len(de.test) == 300
    again = prepare_splits(samples, "sw-KE", missing_train="split-dev", seed=2)
    assert again.dev == de.dev  # the carve-out does not depend on the seed
    small = prepare_splits(
        samples, "sw-KE", missing_train="split-dev", dev_fraction_for_train=0.2, max_train=50
    )
    assert len(small.train) == 50 and len(small.dev) == 480
    en = prepare_splits(samples, "en-US", max_train=100, max_eval=40, train_fraction=0.5, seed=3)
    assert (len(en.train), len(en.dev), len(en.test)) == (100, 40, 40)
    other = prepare_splits(samples, "en-US", max_train=100, max_eval=40, seed=4)
    assert other.test == en.test and other.train != en.train
    with pytest.raises(DataError, match=r"^missing_train='skip': unknown value — use 'error'"):
        prepare_splits(samples, "en-US", missing_train="skip")
    with pytest.raises(DataError, match=r"^max_eval=-1: must be a positive integer or None"):
        prepare_splits(samples, "en-US", max_eval=-1)


# ------------------------------------------------------------------------------ inspect, samples


def test_inspect(tmp_path: Path) -> None:
    path = write_locale(tmp_path, "en-US", [GOOD, row(partition="dev", annot_utt="[hour : x]")])
    report = inspect_data(tmp_path)
    json.dumps(report)
    assert report["locales"]["en-US"]["train"] == {"rows": 1, "slot_types": [], "invalid": 0}
    assert report["locales"]["en-US"]["dev"]["invalid"] == 1
    assert report["n_invalid"] == 1 and report["invalid"][0]["where"] == f"{path}:2"
    text = format_inspect(report)
    assert "en-US   dev       0           0        1" in text
    assert f"  {path}:2: unknown slot type 'hour'" in text
    with pytest.raises(DataError, match=r":2: unknown slot type 'hour'"):
        inspect_data(tmp_path, skip_invalid=False)
    fixtures = format_inspect(inspect_data(FIXTURES, ["zh-CN"]))
    assert "zh-CN   train     2           3        0" in fixtures and "invalid rows: 0" in fixtures


def test_make_samples_small(tmp_path: Path) -> None:
    sizes = {"en-US": {"train": 20, "dev": 5, "test": 5}, "de-DE": {"dev": 10, "test": 5}}
    out = make_samples(SAMPLES_DIR, tmp_path, sizes, seed=1)
    got = load_massive(tmp_path)
    assert got.counts()["de-DE"] == {"train": 0, "dev": 10, "test": 5}
    en_dev = {e.id for e in got.split("en-US", "dev")}
    assert en_dev < {e.id for e in got.split("de-DE", "dev")}
    src = set((SAMPLES_DIR / "en-US.jsonl").read_bytes().splitlines())
    assert set(out["en-US"].read_bytes().splitlines()) <= src
    with pytest.raises(DataError, match=r"the dev split has 300 valid rows but sizes asks for 301"):
        make_samples(SAMPLES_DIR, tmp_path, {"en-US": {"dev": 301}})


def test_shipped_samples_regenerate(real_dir: Path, tmp_path: Path) -> None:
    make_samples(real_dir, tmp_path)
    for loc in DS.SAMPLE_SIZES:
        assert (tmp_path / f"{loc}.jsonl").read_bytes() == (
            SAMPLES_DIR / f"{loc}.jsonl"
        ).read_bytes()


# ------------------------------------------------------------- sources that are not MASSIVE


def _source(tmp_path: Path, kind: str) -> Path:
    if kind == "/dev/null":
        return Path("/dev/null")
    p = (
        tmp_path
        / {
            "empty file": "en-US.jsonl",
            "empty other file": "notes.txt",
            "empty folder": "d",
            "folder without locale files": "d",
            "non-JSON .jsonl": "en-US.jsonl",
            "binary .jsonl": "en-US.jsonl",
            "non-JSON file": "data.csv",
            "not-gzip .tar.gz": "massive.tar.gz",
            "empty .tar.gz": "massive.tar.gz",
        }[kind]
    )
    if kind in ("empty folder", "folder without locale files"):
        p.mkdir()
        if kind == "folder without locale files":
            (p / "README.md").write_text("hi")
            (p / "en-US.json").write_text("{}")
    elif kind.startswith("empty"):
        p.write_bytes(b"")
    elif kind == "non-JSON .jsonl":
        p.write_text("id,utt\n1,hello\n")
    elif kind == "binary .jsonl":
        p.write_bytes(b"\xff\xfe\x00garbage\n\x89PNG\n")
    elif kind == "non-JSON file":
        p.write_text("id,utt\n1,hello\n")
    else:
        p.write_text("this is a web page, not an archive\n")
    return p


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("/dev/null", "not a regular file or folder (a device or pipe) — pass a folder"),
        ("empty file", "empty file (0 bytes) — expected MASSIVE JSON Lines"),
        ("empty other file", "empty file (0 bytes) — expected a <locale>.jsonl file"),
        ("empty folder", "found (the folder is empty) — pass a folder of <locale>.jsonl files"),
        (
            "folder without locale files",
            "found (it holds 2 other entries: README.md, en-US.json) — pass a folder",
        ),
        ("non-JSON .jsonl", "not a JSON Lines file (line 1: bad JSON (Expecting value"),
        ("binary .jsonl", "not a JSON Lines file (line 1: "),
        ("non-JSON file", "not a MASSIVE source — pass a folder of <locale>.jsonl files"),
        ("not-gzip .tar.gz", "not a gzip file (it does not start with the gzip signature)"),
        ("empty .tar.gz", "empty file (0 bytes) — expected the official MASSIVE .tar.gz"),
    ],
)
def test_inspect_of_a_source_that_is_not_massive_is_one_line(tmp_path, kind, needle) -> None:
    from hpc_forget.errors import UserError

    path = _source(tmp_path, kind)
    with pytest.raises(UserError) as err:
        inspect_data(path)  # skip_invalid=True, as `data inspect` does
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and needle in msg, msg
    assert "\n" not in msg and "no such file or folder" not in msg


@pytest.mark.parametrize("split", ["test", "dev", "all"])
def test_empty_locale_split_names_the_file(tmp_path, split) -> None:
    lines = {
        "test": [GOOD, row(id="1", partition="dev")],
        "dev": [GOOD, row(id="1", partition="test")],
        "all": [],
    }[split]
    path = write_locale(tmp_path, "en-US", lines)
    with pytest.raises(DataError) as err:
        prepare_splits(load_massive(tmp_path), "en-US")  # an empty file: already at loading
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    if split == "all":
        assert "no rows (the file is empty)" in msg
    else:
        assert f"locale en-US has no {split} rows (partition '{split}')" in msg


def test_tarball_locale_messages_name_the_member(tmp_path) -> None:
    tar_path = tmp_path / "m.tar.gz"
    blob = (GOOD + "\n").encode()
    with tarfile.open(tar_path, "w:gz") as tar:
        info = tarfile.TarInfo("1.1/data/en-US.jsonl")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(DataError) as err:
        prepare_splits(load_massive(tar_path), "en-US")
    assert str(err.value).startswith(f"{tar_path}[1.1/data/en-US.jsonl]: locale en-US has no test")
