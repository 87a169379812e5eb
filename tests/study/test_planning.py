"""Run keys, tasks and plans."""

from __future__ import annotations

from hpc_forget.study.config import load_config
from hpc_forget.study.planning import RunKey, Task, plan


def test_run_ids_are_stable_distinct_and_filesystem_safe():
    k = RunKey("vanilla", "org/xlm-roberta-base", 0, "1", 0)
    assert k.run_id == RunKey("vanilla", "org/xlm-roberta-base", 0, "1", 0).run_id
    assert k.run_id != RunKey("vanilla", "org/xlm-roberta-base", 0, "2", 0).run_id
    assert "/" not in k.run_id and " " not in k.run_id
    assert k.run_id.startswith("vanilla_xlm-roberta-base_o1_s0_")


def test_demo_plan_shape():
    tasks = plan(load_config("demo"))
    by_method = {}
    for t in tasks:
        by_method.setdefault(t.key.method, []).append(t)
    # two MULTI runs (full and LoRA), one task each
    assert len(by_method["multi"]) == 2 and all(t.kind == "joint" for t in by_method["multi"])
    # MONO / NON-SHARED: one task per language
    assert len(by_method["mono"]) == 4 and len(by_method["nonshared_lora"]) == 4
    # sequential: one task of T steps per order
    assert [len(t.step_indices) for t in by_method["vanilla"]] == [4, 4]
    assert len({t.task_id for t in tasks}) == len(tasks)


def test_paper_plan_size():
    tasks = plan(load_config("paper"))
    # per model: multi 4 ranks + mono 52 + vanilla 5 orders + shared 3 ranks x 5 + nonshared 3 x 52
    assert len(tasks) == 2 * (4 + 52 + 5 + 15 + 156)
    assert len({t.run_id for t in tasks}) == 2 * (4 + 1 + 5 + 15 + 3)


def test_task_dict_round_trip():
    for t in plan(load_config("demo")):
        assert Task.from_dict(t.to_dict()) == t
