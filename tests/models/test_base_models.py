"""BaseModels: a base model read from disk once per process, each copy weight for weight what
load_model returns for its seed (a packed array element's tasks; docs/slurm.md)."""

from __future__ import annotations

import torch

from hpc_forget.data.labels import LABELS
from hpc_forget.models import hub
from hpc_forget.models.hub import BaseModels, load_model


def _same(a: torch.nn.Module, b: torch.nn.Module) -> list[str]:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return [k for k in sa if not torch.equal(sa[k], sb[k])]


def test_fresh_copies_equal_load_model_for_each_seed_and_read_the_disk_once(
    tiny_model_dir, monkeypatch
):
    path = str(tiny_model_dir)
    reads = []
    real = hub._load_model_info
    monkeypatch.setattr(hub, "_load_model_info", lambda *a, **k: reads.append(1) or real(*a, **k))
    base = BaseModels()
    seeds = [7, 123456789, 7, 0]
    got = [base.fresh(path, list(LABELS), seed=s) for s in seeds]
    assert base.loads == 1 and len(reads) == 1
    monkeypatch.setattr(hub, "_load_model_info", real)
    for s, m in zip(seeds, got, strict=True):
        assert _same(m, load_model(path, list(LABELS), seed=s)) == [], s
    # the heads differ between seeds (the test can fail), the encoders do not
    diff = _same(got[0], got[1])
    assert diff and all(k.startswith("classifier.") for k in diff), diff
    # a copy is independent of the pristine model and of other copies
    with torch.no_grad():
        next(got[0].parameters()).add_(1.0)
    assert _same(base.fresh(path, list(LABELS), seed=7), got[2]) == []


def test_fresh_leaves_the_callers_rng_alone(tiny_model_dir):
    base = BaseModels()
    base.fresh(str(tiny_model_dir), list(LABELS), seed=1)
    torch.manual_seed(5)
    want = torch.rand(3)
    torch.manual_seed(5)
    base.fresh(str(tiny_model_dir), list(LABELS), seed=2)
    assert torch.equal(torch.rand(3), want)
