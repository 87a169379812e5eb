"""prefetch against local sources: a file:// tarball built from real MASSIVE rows, a local model
folder as a mirror of a Hub model (then loaded offline from the cache), the Hub's parquet form
from a local folder, and the job-time check with its one-line error."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import pytest

from hpc_forget.cluster import prefetch as P
from hpc_forget.study.config import config_from_dict

LOCALES = ["en-US", "de-DE"]


def massive_rows(massive_dir: Path, locale: str, n: int = 40) -> list[bytes]:
    """The first `n` lines of the real MASSIVE file of `locale` (conftest's `massive_dir`)."""
    with open(massive_dir / f"{locale}.jsonl", "rb") as f:
        return [f.readline() for _ in range(n)]


@pytest.fixture(scope="module")
def tarball(tmp_path_factory, massive_dir: Path) -> Path:
    """A MASSIVE-1.1-shaped tarball (amazon-massive-dataset-1.1/data/<locale>.jsonl) of real rows."""
    path = tmp_path_factory.mktemp("src") / "amazon-massive-dataset-1.1.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for loc in ("en-US", "de-DE", "sw-KE"):
            data = b"".join(massive_rows(massive_dir, loc))
            info = tarfile.TarInfo(f"1.1/data/{loc}.jsonl")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def make_cfg(
    tmp_path: Path, source: str, models=("tiny",), cache: str | None = None, langs=LOCALES
):
    return config_from_dict(
        {
            "name": "pf",
            "store": str(tmp_path / "store"),
            "cache_dir": cache,
            "data": {"source": source, "languages": list(langs)},
            "models": list(models),
            "methods": ["multi"],
        }
    )


def test_what_needs_fetching():
    assert P.data_needs_fetch("https://x/y.tar.gz") and P.data_needs_fetch("file:///y.tar.gz")
    assert P.data_needs_fetch("AmazonScience/massive") and P.data_needs_fetch("hf:a/b")
    assert not P.data_needs_fetch("samples")
    assert P.model_needs_fetch("xlm-roberta-base") and P.model_needs_fetch("org/model")
    assert not P.model_needs_fetch("tiny") and not P.model_needs_fetch("./local-model")


def test_tarball_from_a_file_url_is_fetched_verified_and_recorded(tmp_path, tarball):
    sha = hashlib.sha256(tarball.read_bytes()).hexdigest()
    url = tarball.as_uri()
    cfg = make_cfg(tmp_path, url)
    rec = P.prefetch(cfg, tmp_path / "cache")
    item = rec.find("data", url)
    assert item is not None and item.sha256 == sha and item.source == url
    cached = tmp_path / "cache" / item.path
    assert cached.read_bytes() == tarball.read_bytes()
    on_disk = json.loads((tmp_path / "cache" / P.RECORD).read_text())
    assert on_disk["items"][0]["sha256"] == sha and on_disk["items"][0]["fetched_at"]
    # a second prefetch verifies instead of downloading again
    mtime = cached.stat().st_mtime_ns
    P.prefetch(cfg, tmp_path / "cache")
    assert cached.stat().st_mtime_ns == mtime
    # at job time the worker reads the cached copy, through data.py as usual
    job_cfg = P.check_prefetched(cfg, tmp_path / "cache")
    assert job_cfg.data.source == str(cached)
    from hpc_forget.data.sources import load_massive

    corpus = load_massive(job_cfg.data.source, LOCALES)
    assert sorted(corpus.locales) == sorted(LOCALES)


def test_tarball_checksum_mismatch_is_one_line(tmp_path, tarball):
    url = tarball.as_uri() + "#sha256=" + "0" * 64
    with pytest.raises(P.PrefetchError) as e:
        P.prefetch(make_cfg(tmp_path, url), tmp_path / "cache")
    assert "sha256" in str(e.value) and "\n" not in str(e.value)
    assert not list((tmp_path / "cache" / "massive").glob("*.tar.gz"))  # nothing half-written kept


def test_tarball_without_a_configured_locale(tmp_path, tarball):
    cfg = make_cfg(tmp_path, tarball.as_uri(), langs=["en-US", "th-TH"])
    with pytest.raises(P.PrefetchError, match=r"has no th-TH\.jsonl"):
        P.prefetch(cfg, tmp_path / "cache")


def test_missing_source_file(tmp_path):
    with pytest.raises(P.PrefetchError, match="cannot download"):
        P.prefetch(make_cfg(tmp_path, (tmp_path / "nope.tar.gz").as_uri()), tmp_path / "cache")


def test_cache_must_be_where_jobs_look(tmp_path, tarball):
    cfg = make_cfg(tmp_path, tarball.as_uri(), cache=str(tmp_path / "configured"))
    with pytest.raises(P.PrefetchError, match="the config sets cache_dir"):
        P.prefetch(cfg, tmp_path / "elsewhere")


def test_job_time_check_names_the_prefetch_command(tmp_path, tarball):
    cfg = make_cfg(tmp_path, tarball.as_uri())
    with pytest.raises(P.PrefetchError) as e:
        P.check_prefetched(cfg, tmp_path / "cache")
    msg = str(e.value)
    assert "\n" not in msg and f"hpc-forget prefetch CONFIG --cache {tmp_path / 'cache'}" in msg
    assert "study 'pf'" in msg
    cfg = make_cfg(tmp_path, "samples", models=("xlm-roberta-base",))
    with pytest.raises(P.PrefetchError, match="model xlm-roberta-base is not in the cache"):
        P.check_prefetched(cfg, tmp_path / "cache")
    # nothing networked: nothing to check
    cfg = make_cfg(tmp_path, "samples")
    assert P.check_prefetched(cfg, tmp_path / "cache") == cfg


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, massive_dir: Path) -> Path:
    """A real (tiny, untrained) XLM-R-shaped model folder, standing in for a Hub mirror."""
    from hpc_forget.models.tiny import build_tiny

    out = tmp_path_factory.mktemp("mirror") / "xlmr-mirror"
    texts = [b.decode() for loc in ("en-US", "de-DE") for b in massive_rows(massive_dir, loc, 60)]
    texts = [json.loads(t)["utt"] for t in texts]
    build_tiny(texts, out, ["O", "B-time", "I-time"], vocab_size=300, mlm_steps=0)
    return out


def test_model_from_a_local_folder_loads_offline_from_the_cache(
    tmp_path, model_folder, monkeypatch
):
    cfg = make_cfg(tmp_path, "samples", models=("xlm-roberta-base",))
    cache = tmp_path / "cache"
    rec = P.prefetch(cfg, cache, sources={"xlm-roberta-base": str(model_folder)})
    item = rec.find("model", "xlm-roberta-base")
    assert item is not None and len(item.revision) == 40 and item.files >= 3
    repo = cache / "models--FacebookAI--xlm-roberta-base"
    assert (repo / "refs" / "main").read_text() == item.revision
    assert P.check_prefetched(cfg, cache) == cfg
    # what a job does: offline, by preset name, from the cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from hpc_forget.models.hub import load_model, load_tokenizer

    tok = load_tokenizer("xlm-roberta-base", cache_dir=str(cache))
    model = load_model("xlm-roberta-base", ["O", "B-time", "I-time"], cache_dir=str(cache))
    assert tok("wake me up")["input_ids"] and model.config.num_labels == 3
    # idempotent: the same content, the same commit
    again = P.prefetch(cfg, cache, sources={"xlm-roberta-base": str(model_folder)})
    assert again.find("model", "xlm-roberta-base").revision == item.revision


def test_paper_models_are_prefetched_under_their_hub_ids(tmp_path, model_folder, monkeypatch):
    """The paper config's models (XLM-R base, E5 large instruct) go into the cache under their
    hub ids, and a job loads them offline by preset name."""
    from hpc_forget.models.params import PRESETS
    from hpc_forget.study.config import load_config

    cfg = load_config("paper", overrides={"store": str(tmp_path / "store")})
    assert cfg.models == ("xlm-roberta-base", "multilingual-e5-large-instruct")
    assert all(P.model_needs_fetch(m) for m in PRESETS)
    cache = tmp_path / "cache"
    rec = P.prefetch(cfg, cache, sources={m: str(model_folder) for m in cfg.models})
    for model in cfg.models:
        item = rec.find("model", model)
        assert item is not None and len(item.revision) == 40
        repo = cache / ("models--" + PRESETS[model].replace("/", "--"))
        assert (repo / "refs" / "main").read_text() == item.revision
    assert P.check_prefetched(cfg, cache) == cfg
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from hpc_forget.models.hub import load_model

    model = load_model("multilingual-e5-large-instruct", ["O", "B-time"], cache_dir=str(cache))
    assert model.config.num_labels == 2


def test_hub_models_are_pinned_and_the_pin_is_kept(tmp_path, model_folder, monkeypatch):
    """The Hub call is replaced by a copy into the cache layout; what is checked is which
    revision prefetch asks for and what it records."""
    import shutil

    asked: list[str | None] = []

    def fake_prefetch_model(spec, *, cache_dir, revision):
        asked.append(revision)
        commit = revision or "a" * 40
        snap = Path(cache_dir) / "models--org--m" / "snapshots" / commit
        if not snap.exists():
            shutil.copytree(model_folder, snap)
        return str(snap)

    import hpc_forget.models.hub as M

    monkeypatch.setattr(M, "prefetch_model", fake_prefetch_model)
    cfg = make_cfg(tmp_path, "samples", models=("org/m",))
    rec = P.prefetch(cfg, tmp_path / "cache")
    assert rec.find("model", "org/m").revision == "a" * 40
    P.prefetch(cfg, tmp_path / "cache")  # the recorded revision is fetched again
    P.prefetch(cfg, tmp_path / "cache", revisions={"org/m": "b" * 40})
    P.prefetch(cfg, tmp_path / "cache", update=True)  # main, now
    assert asked == [None, "a" * 40, "b" * 40, None]
    assert (tmp_path / "cache" / "models--org--m" / "refs" / "main").read_text() == "a" * 40


def test_hub_parquet_form_becomes_jsonl_per_locale(tmp_path, massive_dir):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    hub = tmp_path / "hub-parquet"
    want = {}
    for loc in LOCALES:
        rows = [json.loads(b) for b in massive_rows(massive_dir, loc, 300)]
        for part, split in (("train", "train"), ("dev", "validation"), ("test", "test")):
            sel = [r for r in rows if r["partition"] == part]
            if not sel:
                continue
            (hub / loc / split).mkdir(parents=True)
            table = pa.Table.from_pylist(
                [{k: r[k] for k in ("id", "locale", "utt", "annot_utt")} for r in sel]
            )
            pq.write_table(table, hub / loc / split / "0000.parquet")
        want[loc] = len(rows)
    cfg = make_cfg(tmp_path, "AmazonScience/massive")
    rec = P.prefetch(cfg, tmp_path / "cache", sources={"massive": str(hub)})
    item = rec.find("data", "AmazonScience/massive")
    out = tmp_path / "cache" / item.path
    for loc in LOCALES:
        lines = (out / f"{loc}.jsonl").read_text().splitlines()
        assert len(lines) == want[loc]
    job_cfg = P.check_prefetched(cfg, tmp_path / "cache")
    from hpc_forget.data.sources import load_massive

    corpus = load_massive(job_cfg.data.source, LOCALES)
    assert sorted(corpus.locales) == sorted(LOCALES)


def test_the_official_massive_url_is_checked_against_the_recorded_sha256(tmp_path, monkeypatch):
    """The README URL of github.com/alexa/massive, verified by default: a download that is not
    the known file is one line naming both checksums, and nothing is kept."""
    assert P.MASSIVE_URL == (
        "https://amazon-massive-nlu-dataset.s3.amazonaws.com/amazon-massive-dataset-1.1.tar.gz"
    )
    assert P.KNOWN_SHA256[P.MASSIVE_URL] == (
        "4cba5faa11c71437928e17cb1b9b3d8b8e727e7ea363a3a9a8045e19c0491577"
    )
    opened = []

    def fake_urlopen(url, timeout):
        opened.append(url)
        return io.BytesIO(b"not the MASSIVE tarball")

    monkeypatch.setattr(P.urllib.request, "urlopen", fake_urlopen)
    with pytest.raises(P.PrefetchError) as e:
        P.prefetch(make_cfg(tmp_path, P.MASSIVE_URL), tmp_path / "cache")
    msg = str(e.value)
    assert opened == [P.MASSIVE_URL] and "\n" not in msg
    assert P.MASSIVE_SHA256 in msg and "was expected" in msg
    assert not list((tmp_path / "cache" / "massive").iterdir())


def fake_hub(model_folder: Path, asked: list):
    """prefetch_model replaced by a copy into the cache layout; ``asked`` gets the revisions."""
    import shutil

    def fake_prefetch_model(spec, *, cache_dir, revision):
        asked.append((spec, revision))
        commit = revision if revision and len(revision) == 40 else "a" * 40
        repo = Path(cache_dir) / "models--org--m"
        snap = repo / "snapshots" / commit
        if not snap.exists():
            shutil.copytree(model_folder, snap)
        if revision and revision != commit:  # as huggingface_hub does for a tag or branch
            (repo / "refs").mkdir(exist_ok=True)
            (repo / "refs" / revision).write_text(commit)
        return str(snap)

    return fake_prefetch_model


def test_a_config_pins_a_model_revision(tmp_path, model_folder, monkeypatch):
    import hpc_forget.models.hub as M
    import hpc_forget.models.tiny as T

    asked: list = []
    monkeypatch.setattr(M, "prefetch_model", fake_hub(model_folder, asked))
    commit = "b" * 40
    cache = tmp_path / "cache"
    cfg = make_cfg(tmp_path, "samples", models=(f"org/m@{commit}",))
    rec = P.prefetch(cfg, cache)
    item = rec.find("model", f"org/m@{commit}")
    assert asked == [("org/m", commit)] and item.revision == commit
    P.prefetch(cfg, cache, update=True)  # a pinned commit stays pinned
    assert asked[-1] == ("org/m", commit)
    assert not (cache / "models--org--m" / "refs" / "main").exists()  # unpinned loads untouched
    assert P.check_prefetched(cfg, cache) == cfg
    # the job's offline load reads that snapshot, and the provenance names the commit
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = M.load_tokenizer(f"org/m@{commit}", cache_dir=str(cache))
    assert tok("wake me up")["input_ids"]
    resolved = T.resolve_model_spec(f"org/m@{commit}", texts_fn=list, cache_dir=cache)
    assert resolved == f"org/m@{commit}"
    assert T.resolved_revision(resolved, str(cache)) == commit
    # another revision is not in the cache: one line naming it, at job time and at load time
    other = make_cfg(tmp_path, "samples", models=(f"org/m@{'c' * 40}",))
    with pytest.raises(P.PrefetchError, match=f"not in the cache .* at revision {'c' * 40}"):
        P.check_prefetched(other, cache)
    with pytest.raises(M.ModelError, match=f"at revision {'c' * 40}"):
        M.load_tokenizer(f"org/m@{'c' * 40}", cache_dir=str(cache))


def test_a_tag_pin_resolves_offline_through_its_ref(tmp_path, model_folder, monkeypatch):
    import hpc_forget.models.hub as M
    import hpc_forget.models.tiny as T

    asked: list = []
    monkeypatch.setattr(M, "prefetch_model", fake_hub(model_folder, asked))
    cache = tmp_path / "cache"
    cfg = make_cfg(tmp_path, "samples", models=("org/m@v1.0",))
    rec = P.prefetch(cfg, cache)
    assert asked == [("org/m", "v1.0")] and rec.find("model", "org/m@v1.0").revision == "a" * 40
    assert (cache / "models--org--m" / "refs" / "v1.0").read_text() == "a" * 40
    P.prefetch(cfg, cache)  # the record is a lock: the commit, not the moving tag
    assert asked[-1] == ("org/m", "a" * 40)
    assert P.check_prefetched(cfg, cache) == cfg
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert T.resolved_revision("org/m@v1.0", str(cache)) == "a" * 40


def test_resolved_revision_of_folders(tmp_path, model_folder):
    import shutil

    from hpc_forget.models.tiny import resolved_revision

    plain = tmp_path / "plain"
    shutil.copytree(model_folder, plain)
    (plain / "hpc_forget_tiny.json").unlink()
    assert resolved_revision(str(plain)) == "local"
    tiny = resolved_revision(str(model_folder))  # build_tiny's folder: a content hash
    assert re.fullmatch(r"tiny-[0-9a-f]{16}", tiny)
    snap = tmp_path / "models--o--m" / "snapshots" / ("d" * 40)
    shutil.copytree(plain, snap)
    assert resolved_revision(str(snap)) == "d" * 40


def test_revision_conflicts_and_tiny_are_one_line():
    import hpc_forget.models.hub as M
    import hpc_forget.models.tiny as T

    with pytest.raises(M.ModelError, match="pins revision abc but revision def"):
        M.load_config("org/m@abc", revision="def")
    with pytest.raises(M.ModelError, match="'tiny' preset is built locally and has no revision"):
        T.resolve_model_spec("tiny@abc", texts_fn=list, cache_dir="/nonexistent")
    assert M.load_config("xlm-roberta-base@abc").hidden_size == 768  # built in, no download
    assert M.hub_id("xlm-roberta-base@abc") == "FacebookAI/xlm-roberta-base"
    assert P.model_needs_fetch("xlm-roberta-base@abc") and not P.model_needs_fetch("tiny")


def test_the_hub_loader_reads_the_parquet_conversion_with_the_real_datasets(
    tmp_path, monkeypatch, massive_dir
):
    """load_massive('hf:AmazonScience/massive') asks `datasets` for the parquet branch's
    <locale>/<split>/*.parquet files (no loading script); the real loader, pointed at a local
    copy of that layout, reads them."""
    pa = pytest.importorskip("pyarrow")
    import datasets
    import pyarrow.parquet as pq

    hub = tmp_path / "parquet-branch"
    rows = [json.loads(b) for b in massive_rows(massive_dir, "en-US", 200)]
    for part, split in (("train", "train"), ("dev", "validation"), ("test", "test")):
        sel = [r for r in rows if r["partition"] == part] or rows[:1]
        (hub / "en-US" / split).mkdir(parents=True)
        table = pa.Table.from_pylist(
            [{k: r[k] for k in ("id", "locale", "utt", "annot_utt")} for r in sel]
        )
        pq.write_table(table, hub / "en-US" / split / "0000.parquet")
    real = datasets.load_dataset
    asked = []

    def local_hub(name, **kw):
        asked.append((name, kw["revision"]))
        kw.pop("revision")
        return real(str(hub), cache_dir=str(tmp_path / "hf"), **kw)

    monkeypatch.setattr(datasets, "load_dataset", local_hub)
    from hpc_forget.data.sources import load_massive

    corpus = load_massive("hf:AmazonScience/massive", ["en-US"])
    assert asked == [("AmazonScience/massive", "refs/convert/parquet")]
    assert corpus.locales == ["en-US"] and len(corpus.examples["en-US"]) >= 3
