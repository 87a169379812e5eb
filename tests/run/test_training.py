"""The training loop's pure parts: data-parallel sharding and precision choice."""

from __future__ import annotations

import pytest

from hpc_forget.run.training import _shard, mixed_precision


def test_single_process_takes_every_batch():
    assert list(_shard(5, 1, 0)) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("n", "world"), [(10, 2), (11, 2), (7, 3), (2, 4)])
def test_processes_take_disjoint_equal_shares(n, world):
    shares = [list(_shard(n, world, r)) for r in range(world)]
    assert len({len(s) for s in shares}) == 1  # DDP needs equal step counts
    flat = [x for s in shares for x in s]
    assert all(0 <= x < n for x in flat)
    if n >= world:  # disjoint, at most world - 1 dropped
        assert len(flat) == len(set(flat)) and len(flat) > n - world
    else:  # fewer batches than processes: every batch is used
        assert set(flat) == set(range(n))


def test_precision_on_cpu_is_fp32_unless_asked():
    assert mixed_precision("fp32") == "no"
    assert mixed_precision("bf16") == "bf16"
    assert mixed_precision("auto") in ("no", "bf16")
