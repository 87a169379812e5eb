"""The engine end to end on a tiny model: every method, the store, resume, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpc_forget.errors import StoreError
from hpc_forget.run.engine import Preempted, run_config, run_task
from hpc_forget.store.store import Store
from hpc_forget.study.config import config_from_dict
from hpc_forget.study.planning import plan


def _cfg(tmp_path, model_dir, **over):
    raw = {
        "name": "t",
        "store": str(tmp_path / "store"),
        "data": {
            "source": "samples",
            "languages": ["en-US", "th-TH", "de-DE"],
            "max_train": 48,
            "max_eval": 24,
            "missing_train": "split-dev",
        },
        "models": [str(model_dir)],
        "methods": ["multi", "mono", "vanilla", "shared_lora", "nonshared_lora"],
        "ranks": [4],
        "orders": [1, 2],
        "seeds": [0],
        "train": {
            "lr_full": 2e-3,
            "lr_lora": 5e-3,
            "max_epochs_full": 2,
            "max_epochs_lora": 2,
            "patience_full": 1,
            "patience_lora": 1,
            "batch_size": 16,
            "cpu_threads": 1,
        },
    }
    raw.update(over)
    return config_from_dict(raw)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("engine")
    cfg = _cfg(tmp, tiny_model_dir)
    first = run_config(cfg, progress=False)
    return cfg, first


def test_store_holds_every_expected_cell(finished):
    cfg, first = finished
    store = Store(cfg.store)
    assert sum(first.values()) == 1 + 3 + 2 * 3 + 2 * 3 + 3  # multi, mono, 2 chains x2, nonshared
    records = {r.run_id: r for r in store.runs()}
    assert len(records) == 7  # multi, mono, vanilla x2, shared x2, nonshared
    for r in records.values():
        assert store.missing(r.run_id) == []
        m = store.matrix(r.run_id)
        if r.kind == "sequential":
            assert m.shape == (3, 3) and not np.isnan(m).any()  # a complete R matrix
            assert set(r.steps) == set(cfg.data.languages)
        elif r.kind == "joint":
            assert m.shape[0] == 1 and not np.isnan(m[0]).any()
        else:
            assert not np.isnan(np.diag(m)).any()
        assert all(0.0 <= x <= 1.0 for x in m[~np.isnan(m)])
        meta = r.step_meta[0]
        assert meta["epochs_run"] >= 1 and 1 <= meta["best_epoch"] <= meta["epochs_run"]
        assert meta["device"] == "cpu" and meta["train_examples_per_s"] > 0
        assert len(r.dev_curves[0]) == meta["epochs_run"]
        prov = r.provenance[0]
        assert prov["package_version"] and prov["torch"] and prov["host"]
        assert r.config["train"]["lr_full"] == 2e-3
        assert len(r.labels) == 111


def test_running_again_trains_nothing(finished):
    cfg, _ = finished
    assert sum(run_config(cfg, progress=False).values()) == 0


def test_runs_are_deterministic(finished, tmp_path, tiny_model_dir):
    cfg, _ = finished
    # the same vanilla chain in a fresh store gives the same R matrix
    cfg2 = _cfg(tmp_path, tiny_model_dir, methods=["vanilla"], orders=[1])
    run_config(cfg2, progress=False)
    (task,) = plan(cfg2)
    a = Store(cfg.store).matrix(task.run_id)
    b = Store(cfg2.store).matrix(task.run_id)
    np.testing.assert_array_equal(a, b)


def test_interrupted_chain_resumes_to_the_same_scores(finished, tmp_path, tiny_model_dir):
    cfg, _ = finished
    cfg2 = _cfg(tmp_path, tiny_model_dir, methods=["shared_lora"], orders=[2])
    (task,) = plan(cfg2)
    store = Store(cfg2.store)
    calls = {"n": 0}

    def stop_after_first_step() -> bool:
        return store.has_step(task.run_id, 0)

    with pytest.raises(Preempted):
        run_task(task, cfg2, store, should_stop=stop_after_first_step)
    assert store.done_steps(task.run_id) == {0}
    calls["n"] = run_task(task, cfg2, store)
    assert calls["n"] == 2  # steps 1 and 2 only
    np.testing.assert_array_equal(store.matrix(task.run_id), Store(cfg.store).matrix(task.run_id))


def test_unseen_languages_are_scored_too(finished):
    cfg, _ = finished
    store = Store(cfg.store)
    seq = [r for r in store.runs() if r.kind == "sequential"]
    # step 0 row holds scores for languages not trained yet (forward transfer), not NaN
    for r in seq:
        row = store.matrix(r.run_id)[0]
        assert all(not math.isnan(x) for x in row)


def test_read_only_store_fails_before_training(tmp_path, tiny_model_dir, monkeypatch):
    cfg = _cfg(tmp_path, tiny_model_dir, methods=["mono"])

    def refuse(self):
        raise StoreError(f"{self.path}: the store location is read-only — choose a writable store")

    monkeypatch.setattr(Store, "check_writable", refuse)
    import hpc_forget.run.engine as engine

    monkeypatch.setattr(engine, "run_task", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(StoreError, match="read-only"):
        run_config(cfg, progress=False)


def test_changed_config_makes_new_runs_and_never_returns_old_scores(finished, tmp_path_factory):
    """#8: --set data.max_train=... on an existing store trained nothing and printed old scores."""
    cfg, _ = finished
    changed = config_from_dict(
        {**_raw_of(cfg), "data": {**_raw_of(cfg)["data"], "max_train": 40}, "methods": ["mono"]}
    )
    before = {r.run_id for r in Store(cfg.store).runs()}
    ran = run_config(changed, progress=False)
    assert sum(ran.values()) == 3  # trained, not skipped
    after = {r.run_id: r for r in Store(cfg.store).runs()}
    assert before < set(after)  # the old runs are still there, untouched
    new = [after[t.run_id] for t in plan(changed)]
    assert all(r.settings["data"]["max_train"] == 40 for r in new)
    from hpc_forget.study.identity import store_note

    note = store_note(Store(cfg.store), changed, {t.run_id for t in plan(changed)})
    assert note is not None and "(differing in data.max_train)" in note  # what `run` prints


def test_store_path_spelled_differently_is_the_same_run(finished):
    import warnings

    cfg, _ = finished
    respelled = config_from_dict({**_raw_of(cfg), "store": cfg.store + "/../store"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sum(run_config(respelled, progress=False).values()) == 0


def test_run_file_is_written_only_with_the_first_scores(tmp_path, tiny_model_dir):
    """A run that fails on bad data leaves nothing that blocks or mislabels the fixed run."""
    from hpc_forget.errors import DataError

    bad = _cfg(tmp_path, tiny_model_dir, methods=["multi"])
    bad = config_from_dict({**_raw_of(bad), "data": {**_raw_of(bad)["data"], "source": str(
        tmp_path / "nowhere")}})  # fmt: skip
    with pytest.raises(DataError):
        run_config(bad, progress=False)
    store = Store(bad.store)
    assert not store.path.exists() or store.runs() == []


def _raw_of(cfg):
    from hpc_forget.study.config import config_to_dict

    return config_to_dict(cfg)


@pytest.mark.parametrize(("min_epochs", "epochs"), [(0, 2), (4, 4)])
def test_patience_ends_a_step_only_after_min_epochs(tmp_path, tiny_model_dir, min_epochs, epochs):
    """A step whose dev F1 never improves stops after `patience` epochs, but not before
    `min_epochs` (#8: small runs stopped before learning anything)."""
    raw = _raw_of(_cfg(tmp_path, tiny_model_dir, methods=["mono"]))
    raw["data"]["languages"] = ["en-US"]
    raw["orders"] = []
    raw["train"].update(
        lr_full=1e-12, max_epochs_full=6, patience_full=1, min_epochs_full=min_epochs
    )
    cfg = config_from_dict(raw)
    run_config(cfg, progress=False)
    (rec,) = Store(cfg.store).runs()
    assert rec.step_meta[0]["epochs_run"] == epochs
    assert rec.step_meta[0]["min_epochs"] == min_epochs


def test_changed_weights_behind_the_same_spec_are_refused(finished, monkeypatch):
    """Stored steps record the weights they used (provenance model_revision); if the spec now
    resolves to other weights (an unpinned Hub model moved, a tiny model rebuilt differently),
    the old scores are neither skipped over nor continued from."""
    from hpc_forget.errors import ModelError
    from hpc_forget.run.engine import Workspace

    cfg, _ = finished
    recorded = {p["model_revision"] for r in Store(cfg.store).runs() for p in r.provenance.values()}
    assert len(recorded) == 1 and next(iter(recorded)) != "unknown"
    monkeypatch.setattr(Workspace, "revision", lambda self, spec: "0123abcd" * 5)
    with pytest.raises(ModelError, match=r"now resolves to 0123abcd.*pin the revision"):
        run_config(cfg, progress=False)
