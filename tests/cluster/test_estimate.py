"""plan --estimate: the cost model on hand-computed numbers, the throughput file, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpc_forget.cli import cli
from hpc_forget.cluster import estimate as E
from hpc_forget.cluster.profiles import profile_from_mapping
from hpc_forget.errors import EstimateError
from hpc_forget.run.throughput import (
    Throughput,
    read_throughput,
    throughput_document,
    write_throughput,
)
from hpc_forget.study.config import load_config
from hpc_forget.study.planning import plan

# 2 languages, 1000 training / 500 dev / 500 test examples each, 2 epochs.
TWO = {
    "data.languages": ["en-US", "de-DE"],
    "data.max_train": 1000,
    "data.max_eval": 500,
    "methods": ["vanilla", "multi", "mono"],
    "orders": [1],
    "train.max_epochs_full": 2,
}
# train 100 utt/s, eval 1000 utt/s; the model load is 60 s.
TP = Throughput(
    model="tiny",
    device="cuda (fake)",
    precision="bf16",
    batch_size=16,
    eval_batch_size=512,
    train_utt_per_s=100.0,
    eval_utt_per_s=1000.0,
    tokens_per_s=1500.0,
    when="2026-01-01T00:00:00+00:00",
    host="node1",
    package_version="0.1.0",
    source="bench",
)
# both limits 2 min, warning 30 s before: 90 s of work per job
PROFILE = profile_from_mapping(
    {"gres": "gpu:1", "time": "2", "chain_time": "2", "signal_lead_s": 30, "max_requeues": 3},
    name="tiny-limits",
    source="<test>",
)


def _cfg(**more):
    return load_config("demo", overrides={**TWO, **more})


def _by_method(est):
    return {t.method: t for t in est.tasks}


def test_hand_computed_seconds_requeues_and_cannot_finish():
    cfg = _cfg()
    est = E.estimate(cfg, plan(cfg), [TP], PROFILE)
    t = _by_method(est)
    # 90 s of each job is usable, 60 s of it go to the model load: 30 s of work per job
    # vanilla: 2 steps x (2 x 1000/100 train + 2 x 500/1000 dev + 2 x 500/1000 test) = 44 s:
    # two jobs (ceil(44/30) - 1 = 1 requeue), two loads: 164 s
    assert t["vanilla"].compute_s == pytest.approx(44.0)
    assert t["vanilla"].requeues == 1 and t["vanilla"].can_finish
    assert t["vanilla"].wall_s == pytest.approx(164.0)
    assert t["vanilla"].gpu_hours == pytest.approx(164.0 / 3600)
    # multi: 2 x 2000/100 + 2 x 1000/1000 + 1000/1000 = 43 s in one step, longer than a job's
    # 30 s: the step continues from its mid-step checkpoint after one requeue: 43 + 120 s
    assert t["multi"].compute_s == pytest.approx(43.0)
    assert t["multi"].can_finish and t["multi"].requeues == 1
    assert t["multi"].wall_s == pytest.approx(163.0)
    # mono: 20 + 1 + 0.5 = 21.5 s + 60 = 81.5 s per language: fits, no requeue
    monos = [x for x in est.tasks if x.method == "mono"]
    assert len(monos) == 2
    assert all(x.wall_s == pytest.approx(81.5) and x.requeues == 0 for x in monos)
    assert est.gpu_hours == pytest.approx((164 + 163 + 2 * 81.5) / 3600)
    # arrays: chains-0 (vanilla), independent-0 (multi + 2 mono, all at once)
    arrays = {a.name: a for a in est.arrays}
    assert set(arrays) == {"chains-0", "independent-0"}
    assert arrays["independent-0"].wall_s == pytest.approx(163.0)
    assert arrays["independent-0"].cannot_finish == 0
    assert est.wall_s == pytest.approx(164.0)


def test_job_requeues_by_hand():
    p = PROFILE  # 2 min limit, 30 s warning, max_requeues 3
    assert E.job_requeues(30.0, 2, p, 60.0) == (0, "")
    assert E.job_requeues(30.1, 2, p, 60.0) == (1, "")
    assert E.job_requeues(120.0, 2, p, 60.0) == (3, "")
    n, why = E.job_requeues(120.1, 2, p, 60.0)
    assert n == 4 and "max_requeues=3" in why
    n, why = E.job_requeues(1.0, 1, p, 60.0)  # 60 - 30 s usable: all of it the load
    assert n == 0 and "leaves no time after the 60 s model load" in why


def test_a_long_chain_needs_more_requeues_than_the_profile_allows():
    cfg = _cfg(**{"data.max_train": 3000, "methods": ["vanilla"]})
    # two steps of 2 x 3000/100 + 1 + 1 = 62 s: 124 s in jobs of 30 s of work: 4 requeues > 3
    est = E.estimate(cfg, plan(cfg), [TP], PROFILE)
    assert not est.tasks[0].can_finish and "needs 4 requeue(s)" in est.tasks[0].reason
    # a 4-language chain of short steps needs 3 requeues;
    # max_requeues=0 turns it into "cannot finish"
    cfg = _cfg(**{"data.languages": ["en-US", "de-DE", "th-TH", "sw-KE"], "methods": ["vanilla"]})
    strict = profile_from_mapping(
        {"gres": "gpu:1", "time": "2", "signal_lead_s": 30, "max_requeues": 0},
        name="strict",
        source="<test>",
    )
    t = E.estimate(cfg, plan(cfg), [TP], strict).tasks[0]
    # 4 steps, each tests 4 languages: 20 + 1 + 2 = 23 s -> 92 s, ceil(92/30) - 1 = 3
    assert t.compute_s == pytest.approx(92.0)
    assert not t.can_finish and "max_requeues=0" in t.reason
    t = E.estimate(cfg, plan(cfg), [TP], PROFILE).tasks[0]
    assert t.can_finish and t.requeues == 3 and t.wall_s == pytest.approx(92 + 4 * 60)
    short = profile_from_mapping(
        {"gres": "gpu:1", "time": "1", "signal_lead_s": 30}, name="short", source="<test>"
    )
    t = E.estimate(cfg, plan(cfg), [TP], short).tasks[0]
    assert not t.can_finish and "leaves no time after the 60 s model load" in t.reason


def test_throttle_and_data_scale():
    cfg = _cfg(**{"methods": ["mono"]})
    prof = profile_from_mapping(
        {"gres": "gpu:1", "time": "60", "array_throttle": "1"}, name="p", source="<t>"
    )
    est = E.estimate(cfg, plan(cfg), [TP], prof)
    assert est.arrays[0].wall_s == pytest.approx(2 * 81.5)  # one element at a time
    assert E.data_sizes(cfg.data, 0.5) == E.Sizes(train=1000, dev=500, test=500)
    assert E.data_sizes(load_config("paper").data) == E.Sizes(11_514, 2_033, 2_974)
    assert E.data_sizes(load_config("paper").data, 0.1).train == 1151


def test_packed_elements_load_once_and_share_their_limit():
    """tasks_per_job=2: the two MONO tasks share one element: one model load, the element's
    total against the limit (requeues reported on both), one job in the array."""
    cfg = _cfg(**{"methods": ["mono"]})
    roomy = profile_from_mapping(
        {"gres": "gpu:1", "time": "60", "tasks_per_job": "2"}, name="p", source="<t>"
    )
    est = E.estimate(cfg, plan(cfg), [TP], roomy)
    a = est.arrays[0]
    assert (a.tasks, a.elements) == (2, 1)
    # 21.5 s each + one 60 s load (unpacked: 2 x 81.5 on two jobs)
    assert a.wall_s == pytest.approx(2 * 21.5 + 60)
    assert [t.requeues for t in est.tasks] == [0, 0]
    tight = profile_from_mapping(
        {
            "gres": "gpu:1",
            "time": "2",
            "signal_lead_s": 30,
            "max_requeues": 3,
            "tasks_per_job": "2",
        },
        name="q",
        source="<t>",
    )
    # 103 s in an element with 90 s of work per job: one requeue (a second load) on both tasks
    est = E.estimate(cfg, plan(cfg), [TP], tight)
    assert [t.requeues for t in est.tasks] == [1, 1] and all(t.can_finish for t in est.tasks)
    assert est.arrays[0].wall_s == pytest.approx(2 * 21.5 + 2 * 60)
    strict = profile_from_mapping(
        {
            "gres": "gpu:1",
            "time": "2",
            "signal_lead_s": 30,
            "max_requeues": 0,
            "tasks_per_job": "2",
        },
        name="r",
        source="<t>",
    )
    bad = E.estimate(cfg, plan(cfg), [TP], strict).tasks
    assert not any(t.can_finish for t in bad) and "pack fewer" in bad[0].reason


def test_epochs_from_a_store_replace_the_config_maximum(tmp_path):
    from hpc_forget.store.store import Store

    cfg = _cfg(**{"methods": ["mono", "vanilla"]})
    tasks = plan(cfg)
    mono = next(t for t in tasks if t.key.method == "mono")
    st = Store(tmp_path / "store")
    st.put_run(
        mono.run_id,
        key=mono.key.as_dict(),
        kind=mono.kind,
        languages=list(mono.languages),
        steps=list(mono.steps),
        labels=["O"],
        config={},
    )
    for step, epochs in ((0, 1), (1, 2)):
        st.put_step(
            mono.run_id,
            step,
            scores={mono.languages[step]: 0.5},
            dev_curve=[0.1],
            meta={"epochs_run": epochs},
            provenance={},
        )
    got = E.with_store_epochs(E.config_epochs(cfg, tasks), E.mean_epochs(st.runs()))
    assert got[("mono", 0)] == E.Epochs(1.5, "store mean of 2 step(s)")
    assert got[("vanilla", 0)] == E.Epochs(2.0, "config max_epochs")
    est = E.estimate(cfg, tasks, [TP], PROFILE, epochs=got)
    lines = est.source_lines()
    assert "epochs of mono: 1.5 (store mean of 2 step(s))" in lines
    assert "epochs of vanilla: 2 (config max_epochs)" in lines
    mono_t = next(t for t in est.tasks if t.method == "mono")
    assert mono_t.compute_s == pytest.approx(1.5 * 10 + 1.5 * 0.5 + 0.5)


def test_the_source_line_names_the_file_or_the_calibration():
    cfg = _cfg()
    est = E.estimate(cfg, plan(cfg), [TP], PROFILE, source="--throughput tp.json")
    line = est.source_lines()[0]
    assert line.startswith("throughput of tiny: --throughput tp.json (bench on cuda (fake)")
    text = E.format_estimate(est)
    assert "requeues: 2 task(s) need them" in text
    strict = profile_from_mapping(
        {"gres": "gpu:1", "time": "2", "signal_lead_s": 30, "max_requeues": 0},
        name="strict",
        source="<test>",
    )
    text = E.format_estimate(E.estimate(cfg, plan(cfg), [TP], strict))
    assert "CANNOT" in text and "cannot finish within the profile's limits: 2 task(s)" in text


def test_no_record_for_a_model_is_one_line_naming_the_option():
    cfg = _cfg(models=["xlm-roberta-base"])
    with pytest.raises(EstimateError, match=r"^--throughput: no throughput record for model"):
        E.estimate(cfg, plan(cfg), [TP], PROFILE)
    # a preset's hub id matches its preset name
    rec = Throughput(**{**TP.as_dict(), "model": "FacebookAI/xlm-roberta-base"})
    assert E.estimate(cfg, plan(cfg), [rec], PROFILE).tasks


def test_throughput_file_round_trip_and_bad_files(tmp_path):
    p = write_throughput(tmp_path / "tp.json", [TP])
    assert read_throughput(p) == [TP]
    bad = {
        "not json": "{",
        "other format": json.dumps({"format": "x"}),
        "negative": json.dumps(
            throughput_document([Throughput(**{**TP.as_dict(), "train_utt_per_s": 1.0})])
        ).replace('"train_utt_per_s": 1.0', '"train_utt_per_s": -1'),
        "missing": json.dumps(
            {"format": "hpc-forget-throughput", "version": 1, "records": [{"model": "tiny"}]}
        ),
    }
    for name, text in bad.items():
        f = tmp_path / f"{name}.json"
        f.write_text(text)
        with pytest.raises(EstimateError) as exc:
            read_throughput(f)
        msg = str(exc.value)
        assert msg.startswith(f"--throughput {f}") and "\n" not in msg, (name, msg)
    with pytest.raises(EstimateError, match="cannot read it"):
        read_throughput(tmp_path / "nope.json")


def _invoke(*args):
    return CliRunner().invoke(cli, list(args))


def _tp_file(tmp_path: Path) -> Path:
    return write_throughput(tmp_path / "tp.json", [TP])


def test_cli_estimate_json_shape(tmp_path):
    f = _tp_file(tmp_path)
    sets = [x for k, v in TWO.items() for x in ("--set", f"{k}={json.dumps(v)}")]
    r = _invoke("plan", "demo", *sets, "--estimate", "--throughput", str(f), "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert set(d) == {
        "profile",
        "gpus_per_task",
        "total",
        "throughput",
        "epochs",
        "arrays",
        "tasks",
        "notes",
    }
    assert d["profile"] == "default" and d["throughput"]["source"] == f"--throughput {f}"
    assert d["total"]["tasks"] == len(d["tasks"]) == 4
    assert {a["name"] for a in d["arrays"]} == {"chains-0", "independent-0"}
    assert set(d["tasks"][0]) >= {
        "task_id",
        "array",
        "wall_s",
        "gpu_hours",
        "requeues",
        "can_finish",
    }


def _main_error(capsys, *args) -> str:
    from hpc_forget.cli import main

    with pytest.raises(SystemExit) as exc:
        main(list(args))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_cli_estimate_errors_are_one_line_naming_the_option(tmp_path, capsys):
    f = str(_tp_file(tmp_path))
    err = _main_error(capsys, "plan", "demo", "--estimate", "--profile", "nope", "--throughput", f)
    assert "--profile: no profile named 'nope'" in err
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    err = _main_error(capsys, "plan", "demo", "--estimate", "--throughput", str(bad))
    assert f"--throughput {bad}: not a throughput file" in err
    err = _main_error(capsys, "plan", "demo", "--profile", "local")
    assert "--profile needs --estimate" in err
    err = _main_error(
        capsys, "plan", "demo", "--estimate", "--throughput", f, "--calibrate", "x.json"
    )
    assert "--calibrate and --throughput" in err


@pytest.mark.slow  # ~10 s: torch, a tokenizer trained on the samples, a few batches
def test_calibrate_measures_the_tiny_model():
    from hpc_forget.run.calibrate import CALIBRATION_NOTE, calibrate

    rec = calibrate("tiny", batch_size=8, eval_batch_size=32, batches=3, cpu_threads=1)
    assert rec.model == "tiny" and rec.device == "cpu" and rec.note == CALIBRATION_NOTE
    assert rec.train_utt_per_s > 0 and rec.eval_utt_per_s > 0 and rec.tokens_per_s > 0
    assert rec.batch_size == 8 and rec.eval_batch_size == 32


@pytest.mark.slow
def test_calibration_on_the_tiny_model_writes_a_record_plan_reads(tmp_path):
    out = tmp_path / "cal.json"
    sets = ["--set", "data.languages=[en-US]", "--set", "methods=[multi]"]
    r = _invoke("plan", "demo", *sets, "--estimate", "--calibrate", str(out))
    assert r.exit_code == 0, r.output
    assert "calibration on this machine, saved to" in r.output
    assert "random-init shape-only calibration" in r.output
    (rec,) = read_throughput(out)
    assert rec.model == "tiny" and rec.source == "calibration" and rec.train_utt_per_s > 0
    r = _invoke("plan", "demo", *sets, "--estimate", "--throughput", str(out))
    assert r.exit_code == 0 and f"--throughput {out}" in r.output
