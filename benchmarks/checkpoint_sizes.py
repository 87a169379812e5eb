"""Benchmark: the sizes of checkpoint files as the code saves them, at xlm-roberta-base size.

A random-init model of xlm-roberta-base's shapes (``models.params.XLMR_BASE_CONFIG``, vocab
250,002, 111 labels), full fine-tuning and LoRA r=32 (``models.lora.add_lora`` with the
default ``train`` settings), each:

- trains one real step (``run.training.train_step``, the default hyper-parameters of vanilla /
  SHARED LoRA) on random MASSIVE-length utterances, stopped after its first batch: the loop
  writes its mid-step checkpoint with the real :class:`~hpc_forget.run.checkpoints.MidStep`
  (weights, best weights, AdamW's state after one step, scheduler, random states, ...);
- then writes the step checkpoint with the real ``save_checkpoint``.

Both files (and their sha256 records) are measured, then deleted. The table gives bytes per
file, and the disk a chain needs at most (only the newest step checkpoint is kept: a new one is
written beside the old before the old is removed, and a periodic mid-step checkpoint is
written beside the previous one): ``max(2 S + M, S + 2 M)``; against ``52 S`` if every step of
a 52-language chain kept its own.

    python benchmarks/checkpoint_sizes.py                     # both methods, CPU (~1-2 min)
    python benchmarks/checkpoint_sizes.py --methods lora --json

Needs ~8 GB of memory for full fine-tuning and ~11 GB free under --dir (default: the temp dir).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

CHAIN_STEPS = 52
METHODS = {"full": ("vanilla", 0), "lora": ("shared_lora", 32)}
ROWS_ONE_LANGUAGE = 4_791
"""Distinct XLM-R pieces of en-US's MASSIVE train+dev (13,547 utterances; th-TH's: 3,711),
counted with the rebuilt tokenizer (../shared/models/xlmr-tokenizer) on 2026-12-04. A full
fine-tuning step trains these rows of the word embedding only (run/embeddings.py), so its
mid-step checkpoint holds AdamW's moments for them, not for all 250,002; MULTI's step (all
52 languages) uses more, up to every row (the dense size)."""


def build_model(method: str) -> torch.nn.Module:
    """A random-init token classifier of xlm-roberta-base's shapes; LoRA r=32 for ``lora``."""
    from transformers import AutoModelForTokenClassification, XLMRobertaConfig

    from hpc_forget.data.labels import LABELS
    from hpc_forget.models.hub import quiet_transformers
    from hpc_forget.models.lora import add_lora
    from hpc_forget.models.params import XLMR_BASE_CONFIG
    from hpc_forget.study.config import TrainConfig

    config = XLMRobertaConfig(**XLMR_BASE_CONFIG, num_labels=len(LABELS))
    torch.manual_seed(0)
    with quiet_transformers():
        model = AutoModelForTokenClassification.from_config(config)
    _, rank = METHODS[method]
    if rank:
        train = TrainConfig()
        model = add_lora(
            model, rank, dropout=train.lora_dropout, train_head=train.lora_head == "train"
        )
    return model


def _utterances(n: int, vocab: int, n_labels: int, rows: int, seed: int = 0) -> SimpleNamespace:
    """``n`` encoded utterances of MASSIVE's lengths (8..20 sub-words, <s> and </s> included)
    that use about ``rows`` distinct pieces in all (each piece of a pool of ``rows - 2`` ids
    once, then random ones of it): the rows a full fine-tuning step trains."""
    rng = random.Random(seed)
    pool = list(range(3, min(vocab, rows + 1)))
    stream = iter(pool)
    ids, labels = [], []
    for _ in range(n):
        k = rng.randint(6, 18)
        body = [next(stream, None) or rng.choice(pool) for _ in range(k)]
        ids.append([0] + body + [2])
        labels.append([-100] + [rng.randrange(n_labels) for _ in range(k)] + [-100])
    return SimpleNamespace(input_ids=ids, labels=labels)


def _size(path: Path) -> int:
    """Bytes of a checkpoint file and its record."""
    record = path.with_suffix(".json")
    return path.stat().st_size + (record.stat().st_size if record.is_file() else 0)


def measure(method: str, folder: Path, *, threads: int, rows: int) -> list[dict[str, Any]]:
    """Save a mid-step checkpoint (train_step stopped after one batch) and a step checkpoint
    of ``method`` under ``folder``; their sizes; the files are removed."""
    from hpc_forget.data.labels import LABELS
    from hpc_forget.run.checkpoints import (
        MidStep,
        checkpoint_dir,
        checkpoint_path,
        save_checkpoint,
    )
    from hpc_forget.run.training import Preempted, StepData, make_accelerator, train_step
    from hpc_forget.study.config import TrainConfig
    from hpc_forget.study.methods import step_hyper

    name, rank = METHODS[method]
    model = build_model(method)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    hyper = step_hyper(name, rank, TrainConfig())
    n = max(2 * hyper.batch_size, -(-rows // 12))
    enc = _utterances(n, model.config.vocab_size, len(LABELS), rows)
    cfg = SimpleNamespace(store=str(folder))
    run_id = f"sizes-{method}"
    midstep = MidStep(cfg, run_id, 0, label=f"{method} step 1")
    polls = [0]

    def stop() -> bool:  # polled before the epoch, then after every batch: stop after one
        polls[0] += 1
        return polls[0] >= 2

    t0 = time.perf_counter()
    try:
        train_step(
            model,
            StepData(train=enc, dev=enc, dev_examples=[]),
            replace(hyper, max_epochs=1),
            accelerator=make_accelerator("fp32", cpu_threads=threads),
            labels=list(LABELS),
            pad_id=model.config.pad_token_id,
            seed=0,
            should_stop=stop,
            midstep=midstep,
        )
    except Preempted:
        pass
    else:
        raise RuntimeError("train_step did not stop after its first batch")
    train_s = time.perf_counter() - t0
    if midstep.saves != 1:
        raise RuntimeError(f"expected one mid-step checkpoint, got {midstep.saves}")
    mid = _size(midstep.path)
    state = torch.load(midstep.path, map_location="cpu", weights_only=True, mmap=True)
    moments = sum(
        1 for s in state["optimizer"]["state"].values() if "exp_avg" in s and "exp_avg_sq" in s
    )
    del state
    midstep.remove()
    t0 = time.perf_counter()
    path = save_checkpoint(model, cfg, run_id, 0, n_steps=CHAIN_STEPS)
    save_s = time.perf_counter() - t0
    step = _size(checkpoint_path(cfg, run_id, 0))
    shutil.rmtree(checkpoint_dir(cfg, run_id))
    assert not path.exists()
    common = {"method": method, "trainable": trainable}
    return [
        {**common, "kind": "step", "bytes": step, "seconds": round(save_s, 1)},
        {
            **common,
            "kind": "mid-step",
            "bytes": mid,
            "seconds": round(train_s, 1),
            "adamw_params_with_moments": moments,
        },
    ]


def chain_disk(step: int, mid: int) -> dict[str, int]:
    """The disk a chain's checkpoints need at most (only the newest step checkpoint kept:
    two for a moment beside a mid-step one, or one beside two mid-step ones for a moment),
    and what every step keeping its own would need."""
    return {
        "newest_kept_peak": max(2 * step + mid, step + 2 * mid),
        "all_kept": CHAIN_STEPS * step,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=["full", "lora"])
    ap.add_argument("--dir", default=None, help="where the files are written (then removed)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument(
        "--rows",
        type=int,
        default=ROWS_ONE_LANGUAGE,
        help="distinct pieces the step's data uses (default: en-US train+dev's, measured)",
    )
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hpc-forget-ckpt-sizes-", dir=args.dir) as tmp:
        for method in args.methods:
            rows += measure(method, Path(tmp), threads=args.threads, rows=args.rows)
    disk = {
        m: chain_disk(
            *(
                next(r["bytes"] for r in rows if r["method"] == m and r["kind"] == k)
                for k in ("step", "mid-step")
            )
        )
        for m in args.methods
    }
    if args.json:
        print(json.dumps({"rows": rows, "chain": disk, "torch": torch.__version__}, indent=1))
        return
    print(f"{'kind':<9} {'method':<6} {'trainable':>12} {'bytes':>14} {'GB':>7}")
    for r in rows:
        print(
            f"{r['kind']:<9} {r['method']:<6} {r['trainable']:>12,} {r['bytes']:>14,}"
            f" {r['bytes'] / 1e9:>7.3f}"
        )
    for m, d in disk.items():
        print(
            f"{m}: a {CHAIN_STEPS}-step chain needs at most {d['newest_kept_peak'] / 1e9:.2f} GB"
            f" (newest step checkpoint kept; {d['all_kept'] / 1e9:.1f} GB if all were kept)"
        )


if __name__ == "__main__":
    main()
