"""The training loop of one step: Accelerate, length-grouped batches, early stopping on dev F1.

Written to be fast on GPUs where MASSIVE's short utterances make launches and syncs the cost:
batches are grouped by length and padded to a multiple of 8 (few distinct shapes); the loss is
accumulated on the device and read once per epoch; the only other host sync per epoch is the
dev evaluation. The best epoch's trainable weights are kept on the device and restored at the end.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from accelerate import Accelerator

from hpc_forget.data.batching import collate, train_batches
from hpc_forget.errors import ConfigError
from hpc_forget.run.checkpoints import CheckpointDamaged
from hpc_forget.run.embeddings import compact_rows_apply, fast_embedding_rows
from hpc_forget.run.evaluation import predict_words, score_examples

if TYPE_CHECKING:
    from hpc_forget.run.checkpoints import MidStep
    from hpc_forget.run.strategies import StepContext, Strategy
    from hpc_forget.study.methods import StepHyper

log = logging.getLogger("hpc_forget")


class Preempted(Exception):
    """should_stop() turned true: the step was abandoned; the store and checkpoints are intact."""


@dataclass
class StepData:
    """Encoded training and dev data of a step, with the dev examples for word-level scoring."""

    train: Any  # models.Encoded
    dev: Any
    dev_examples: Sequence[Any]


@dataclass
class TrainResult:
    epochs_run: int
    best_epoch: int  # 1-based; 0 when no epoch improved on the start
    best_dev_f1: float
    dev_curve: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    wall_time_s: float = 0.0
    train_examples_per_s: float = 0.0
    lr_curve: list[float] = field(default_factory=list)  # group 0's lr after each epoch


def choose_precision(precision: str, *, cuda: bool, capability: tuple[int, int] | None) -> str:
    """Accelerate's ``mixed_precision`` for ``train.precision`` on a device (pure).

    ``auto`` is bf16 only on a CUDA GPU with real bf16 units (compute capability 8.0 or more:
    A100, H100, L4, ...); V100 and T4 only emulate bf16 (``torch.cuda.is_bf16_supported()``
    counts that), so ``auto`` trains them in fp32. ``bf16`` and ``fp16`` are taken as asked;
    fp16 (with accelerate's gradient scaler) needs a CUDA GPU. ``fp32`` is ``"no"``.
    """
    if precision == "fp32":
        return "no"
    if precision == "bf16":
        return "bf16"
    if precision == "fp16":
        if not cuda:
            raise ConfigError("train.precision fp16 needs a CUDA GPU; use fp32 or bf16 here")
        return "fp16"
    if precision != "auto":
        raise ConfigError(f"train.precision must be auto, bf16, fp16 or fp32, got {precision!r}")
    if cuda and capability is not None and tuple(capability) >= (8, 0):
        return "bf16"
    return "no"


def mixed_precision(precision: str) -> str:
    """:func:`choose_precision` on this machine's first visible CUDA device (or none)."""
    cuda = torch.cuda.is_available()
    capability = torch.cuda.get_device_capability() if cuda else None
    return choose_precision(precision, cuda=cuda, capability=capability)


def make_accelerator(precision: str, cpu_threads: int = 0) -> Accelerator:
    """An in-code Accelerator (never reads a user's accelerate config file).

    On CPU, ``cpu_threads`` > 0 caps torch's threads: small models on busy machines run many
    times faster on one thread than on several that contend. On a GPU in fp32, TF32 is off
    (fp32 means fp32: TF32 matmuls round inputs to 10 mantissa bits).
    """
    on_cpu = not torch.cuda.is_available()
    if on_cpu and cpu_threads > 0:
        torch.set_num_threads(cpu_threads)
    mixed = mixed_precision(precision)
    if not on_cpu and mixed == "no":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return Accelerator(mixed_precision=mixed, cpu=on_cpu)


def agreed(accelerator: Accelerator, flag: bool) -> bool:
    """``flag`` agreed by every process: true on all as soon as it is true on one.

    A stop flag read by each process on its own could raise on one rank while the others
    wait in the next all-reduce forever. Every process must call this at the same point.
    """
    if accelerator.num_processes <= 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def agreed_stop(accelerator: Accelerator, should_stop: Callable[[], bool]) -> Callable[[], bool]:
    """``should_stop`` as every process agrees on it (:func:`agreed`)."""
    if accelerator.num_processes <= 1:
        return should_stop
    return lambda: agreed(accelerator, should_stop())


def main_value(accelerator: Accelerator, value: float) -> float:
    """Process 0's ``value`` on every process (a broadcast; itself on a single process)."""
    if accelerator.num_processes <= 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=accelerator.device)
    dist.broadcast(t, src=0)
    return float(t.item())


def prepare_model(accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
    """``model`` prepared for training (moved to the device; DDP-wrapped on several
    processes; its forward under autocast in mixed precision). Prepare a model once, not once
    per step: preparing again wraps the wrapper. Undo with :func:`release_model`."""
    return accelerator.prepare_model(model)


def release_model(accelerator: Accelerator, model: torch.nn.Module) -> None:
    """Drop what :func:`prepare_model` attached to ``model`` and free the accelerator's
    references, so a finished model is freed by reference counting (no cycle waits for the
    garbage collector) and an old DDP wrapper's gradient buffers go with it.

    In mixed precision accelerate replaces ``model.forward`` by a method bound to ``model``
    (a reference cycle); the class's own forward is restored here.
    """
    for attr in ("forward", "_original_forward", "_is_accelerate_prepared"):
        model.__dict__.pop(attr, None)  # (the last: else prepare_model returns it as it is)
    accelerator.free_memory()  # its lists of models and optimizers; gc.collect; empty_cache


class Prepared:
    """A model prepared once for a task (:func:`prepare_model`), again only when its trainable
    weights changed (a strategy froze some, or a step trains compact embedding rows,
    run/embeddings.py): DDP hooks the gradients of the weights that train when it wraps the
    model. ``model`` stays the plain model (strategies, the
    evaluation and checkpoints use it and its parameter names); training calls ``wrapped()``.
    """

    def __init__(self, accelerator: Accelerator, model: torch.nn.Module) -> None:
        self.accelerator, self.model = accelerator, model
        self._wrapped: torch.nn.Module | None = None
        self._trains: tuple[torch.nn.Parameter, ...] = ()

    def wrapped(self) -> torch.nn.Module:
        trains = tuple(p for _, p in _trainable(self.model))
        same = len(trains) == len(self._trains) and all(
            a is b for a, b in zip(trains, self._trains, strict=True)
        )
        if self._wrapped is not None and not same:
            self.release()
        if self._wrapped is None:
            self._wrapped, self._trains = prepare_model(self.accelerator, self.model), trains
        return self._wrapped

    def release(self) -> None:
        """Unwrap and free (:func:`release_model`); the plain model stays usable."""
        self._wrapped = None
        release_model(self.accelerator, self.model)


def _shard(n_batches: int, world: int, rank: int) -> list[int]:
    """The batch positions process ``rank`` of ``world`` trains on (data parallel).

    Every process takes the same number of batches (DDP needs equal steps): up to world - 1
    batches of an epoch are dropped, and an epoch of fewer batches than processes repeats
    some. A single process takes them all.
    """
    if world <= 1 or n_batches == 0:
        return list(range(n_batches))
    usable = max(world, n_batches - n_batches % world)
    return [i % n_batches for i in range(rank, usable, world)]


def _trainable(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


POLL_EVERY_DDP = 16
"""Batches between two polls of the stop flag (and the periodic checkpoint's clock) on
several processes, where agreeing on them is an all-reduce and a host sync; a single
process polls after every batch (a Python attribute). Both also poll after an epoch's last."""

MIDSTEP_VERSION = 1


def rng_states() -> dict[str, Any]:
    """torch's (CPU and CUDA), numpy's and Python's global random states, as plain values
    (tensors, tuples, numbers) a weights-only checkpoint holds."""
    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "python": random.getstate(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Put back what :func:`rng_states` returned."""
    import numpy as np

    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


def _check_midstep(
    state: dict[str, Any], params: list[tuple[str, torch.nn.Parameter]], fingerprint: dict
) -> None:
    """CheckpointDamaged unless ``state`` is a mid-step state of this very step."""
    if state.get("version") != MIDSTEP_VERSION:
        raise CheckpointDamaged(f"version {state.get('version')!r}, not {MIDSTEP_VERSION}")
    if state.get("fingerprint") != fingerprint:
        raise CheckpointDamaged("it is of another step (its data, seed or batches differ)")
    for what in ("weights", "best"):
        saved = state.get(what)
        if not isinstance(saved, dict) or set(saved) != {n for n, _ in params}:
            raise CheckpointDamaged(f"its {what} do not match the model's trainable weights")
        for n, p in params:
            if tuple(saved[n].shape) != tuple(p.shape):
                raise CheckpointDamaged(f"{n} has shape {tuple(saved[n].shape)}")


def train_step(
    model: torch.nn.Module,
    data: StepData,
    hyper: StepHyper,
    *,
    accelerator: Accelerator,
    labels: Sequence[str],
    pad_id: int,
    seed: int,
    should_stop: Callable[[], bool] = lambda: False,
    progress: bool = False,
    strategy: Strategy | None = None,
    ctx: StepContext | None = None,
    prepared: Prepared | None = None,
    midstep: MidStep | None = None,
    fast: bool = True,
) -> TrainResult:
    """Train ``model`` in place on one step's data; leave it holding the best epoch's weights.

    ``hyper`` is the step's hyper-parameters, decided once by :func:`study.methods.step_hyper`.
    Early stopping: the step ends once dev F1 has not improved for ``patience`` epochs, but
    never before ``min_epochs`` epochs (a small model's dev F1 is often 0 for its first
    epochs, and patience would end the step before it learns anything). A ``strategy`` whose
    ``adds_loss`` is set adds its term to every batch's loss (run/strategies.py); its hooks
    get the plain ``model``, never a DDP wrapper.

    ``prepared``: the task's :class:`Prepared` of ``model`` (the engine prepares a model once
    per task); without one, the model is prepared here and released at the end.

    ``midstep``: where this step's mid-step checkpoint lives (run/checkpoints.py). The stop
    flag is polled after every batch (every :data:`POLL_EVERY_DDP` on several processes);
    when it is set the loop saves its whole state there (weights, optimizer, scheduler, RNG
    states, the position in the epoch's batch order, early stopping, the best weights, the
    curves) and raises Preempted; it also saves every ``midstep.interval_s`` seconds. A step
    that finds a usable one continues from the batch after it: on one process (CPU), bit for
    bit what an uninterrupted step computes. Strategies' hooks run as usual (before_step on
    the step's starting weights), and a strategy's per-batch random state is saved through
    ``Strategy.midstep_state``. On several processes rank 0 writes it, and ranks > 0 draw
    new dropout streams on resume (the only difference from an uninterrupted step).

    On several processes (data parallel), every process trains on its shard of each epoch's
    batches with its own dropout stream; the stop flag, and every early-stopping decision
    (rank 0's dev F1), are the same on all of them, so they leave the loop together.

    ``fast``: in full fine-tuning without weight decay, train only the word-embedding rows
    the step's training and dev data use (run/embeddings.py: the same step up to summation
    order, without a dense 250k-row gradient and optimizer update). Off: the straightforward
    dense loop, which the equivalence test and the benchmark compare against.
    """
    extra_loss = strategy is not None and strategy.adds_loss
    on = fast and compact_rows_apply(model, weight_decay=hyper.weight_decay, adds_loss=extra_loss)
    with fast_embedding_rows(model, data, accelerator.device, on=on):
        lr, head_lr = hyper.lr, hyper.head_lr
        batch_size, eval_batch_size = hyper.batch_size, hyper.eval_batch_size
        pad_multiple, max_grad_norm = hyper.pad_multiple, hyper.max_grad_norm
        from transformers import get_linear_schedule_with_warmup

        device = accelerator.device
        params = _trainable(model)
        # Parameter groups: weight decay except on biases and LayerNorm; in LoRA runs the
        # classifier may have its own learning rate (head_lr), so it can learn the label prior
        # before the shared LoRA update drowns the tiny residual stream (docs/models.md).
        groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
        for n, p in params:
            is_head = head_lr is not None and "classifier" in n
            decays = p.ndim > 1 and "LayerNorm" not in n
            groups.setdefault((is_head, decays), []).append(p)
        # The fused kernel (CPU and CUDA) updates every parameter in one pass; the default
        # per-tensor loop is several times slower on MASSIVE's short batches.
        optimizer = torch.optim.AdamW(
            [
                {
                    "params": ps,
                    "lr": head_lr if is_head else lr,
                    "weight_decay": hyper.weight_decay if decays else 0.0,
                }
                for (is_head, decays), ps in sorted(groups.items())
            ],
            lr=lr,
            fused=True,
        )
        lengths = [len(x) for x in data.train.input_ids]
        world, rank = accelerator.num_processes, accelerator.process_index
        n_batches = len(_shard(-(-len(lengths) // batch_size), world, rank))
        total = max(1, n_batches * hyper.max_epochs)
        scheduler = get_linear_schedule_with_warmup(
            optimizer, int(hyper.warmup_ratio * total), total
        )
        # The optimizer is prepared (fp16's gradient scaler), the scheduler is not: accelerate's
        # AcceleratedScheduler steps it once per process per optimizer step (split_batches=False),
        # which would run the schedule num_processes times too fast. Stepped here once per step.
        optimizer = accelerator.prepare_optimizer(optimizer)
        own = prepared is None
        prepared = Prepared(accelerator, model) if prepared is None else prepared
        net = prepared.wrapped()
        if rank > 0:  # every process its own dropout masks (process 0's are a single process's)
            torch.manual_seed(seed + rank * 2**32)
        stop = agreed_stop(accelerator, should_stop)

        def dev_f1() -> float:
            pred = predict_words(
                model,
                data.dev,
                batch_size=eval_batch_size,
                pad_id=pad_id,
                pad_multiple=pad_multiple,
                device=device,
                autocast=accelerator.autocast,
            )
            return score_examples(data.dev_examples, pred, labels)[0]

        best_f1 = -1.0
        best_epoch = 0
        best_state = [p.detach().clone() for _, p in params]
        curve: list[float] = []
        losses: list[float] = []
        lrs: list[float] = []
        since_best = 0
        seen = 0
        elapsed = 0.0  # training seconds before this process took the step over
        fingerprint = {
            "examples": len(lengths),
            "batches": n_batches,
            "seed": seed,
            "max_epochs": hyper.max_epochs,
            "processes": world,
            "trainable": sum(p.numel() for _, p in params),
        }
        resume = (
            midstep.load(lambda st: _check_midstep(st, params, fingerprint)) if midstep else None
        )
        if agreed(accelerator, midstep is not None and resume is None):
            resume = None  # one process could not read it: every one starts the step afresh
        if resume is not None:
            with torch.no_grad():
                for keep, (n, p) in zip(best_state, params, strict=True):
                    p.copy_(resume["weights"][n])
                    keep.copy_(resume["best"][n])
            optimizer.load_state_dict(resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
            if resume["scaler"] is not None and accelerator.scaler is not None:
                accelerator.scaler.load_state_dict(resume["scaler"])
            best_f1, best_epoch, since_best = resume["early"]
            curve, losses, lrs = list(resume["curve"]), list(resume["losses"]), list(resume["lrs"])
            seen, elapsed = int(resume["seen"]), float(resume["elapsed"])
            if strategy is not None and ctx is not None:
                strategy.load_midstep_state(resume["strategy"], ctx)
            if rank == 0:
                set_rng_states(resume["rng"])
            else:  # new dropout streams (rank 0 saved only its own)
                torch.manual_seed(seed + rank * 2**32 + resume["epoch"] * 2**20 + resume["batch"])
            log.info(
                "%s: continuing from its mid-step checkpoint (epoch %d, batch %d/%d)",
                midstep.label,
                resume["epoch"],
                resume["batch"],
                n_batches,
            )
        t0 = time.perf_counter()
        interval = midstep.interval_s if midstep is not None else 0.0
        last_save = midstep.clock() if interval > 0 else 0.0

        def save(epoch: int, done: int, running: torch.Tensor) -> None:
            """The loop's whole state after ``done`` batches of ``epoch`` (rank 0 writes it)."""
            nonlocal last_save
            if midstep is None:
                return
            if accelerator.is_main_process:
                scaler = accelerator.scaler
                midstep.save(
                    {
                        "version": MIDSTEP_VERSION,
                        "fingerprint": fingerprint,
                        "epoch": epoch,
                        "batch": done,
                        "weights": {n: p.detach().cpu() for n, p in params},
                        "best": {n: k.cpu() for (n, _), k in zip(params, best_state, strict=True)},
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict() if scaler is not None else None,
                        "early": (best_f1, best_epoch, since_best),
                        "curve": curve,
                        "losses": losses,
                        "lrs": lrs,
                        "running": running.detach().cpu(),
                        "seen": seen,
                        "elapsed": elapsed + time.perf_counter() - t0,
                        "rng": rng_states(),
                        "strategy": strategy.midstep_state(ctx) if strategy and ctx else {},
                    }
                )
            accelerator.wait_for_everyone()
            last_save = midstep.clock() if interval > 0 else 0.0

        def due() -> bool:
            """The periodic checkpoint is due (rank 0's clock decides, on every process)."""
            if interval <= 0:
                return False
            return agreed(
                accelerator, accelerator.is_main_process and midstep.clock() - last_save >= interval
            )

        epochs = range(1, hyper.max_epochs + 1)
        if progress:
            from tqdm.auto import tqdm

            epochs = tqdm(epochs, desc="epochs", leave=False)
        first_epoch = resume["epoch"] if resume is not None else 1
        epoch = 0
        for epoch in epochs:
            if epoch < first_epoch:
                continue
            resumed = resume is not None and epoch == first_epoch
            if not resumed and stop():
                if epoch > 1:
                    save(epoch, 0, torch.zeros((), device=device))
                raise Preempted(f"stopped before epoch {epoch}")
            net.train()
            running = torch.zeros((), device=device)
            start = 0
            if resumed:
                running, start = resume["running"].to(device), resume["batch"]
            batches = train_batches(lengths, batch_size, seed=seed * 100_003 + epoch)
            shard = _shard(len(batches), world, rank)
            for pos in range(start, len(shard)):
                idx = batches[shard[pos]]
                batch = collate(
                    data.train.input_ids,
                    data.train.labels,
                    idx,
                    pad_id=pad_id,
                    pad_multiple=pad_multiple,
                )
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                with accelerator.autocast():
                    loss = net(**batch).loss
                    if extra_loss:
                        loss = strategy.batch_loss(model, batch, loss, ctx)
                accelerator.backward(loss)
                if max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
                optimizer.step()
                if not getattr(optimizer, "step_was_skipped", False):  # fp16: an inf/nan step
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                running += loss.detach()
                seen += len(idx) * world
                done = pos + 1
                if world <= 1 or done % POLL_EVERY_DDP == 0 or done == len(shard):
                    if stop():
                        save(epoch, done, running)
                        raise Preempted(
                            f"stopped in epoch {epoch} after batch {done}/{len(shard)}"
                            + (" (checkpointed)" if midstep is not None else "")
                        )
                    if due():
                        save(epoch, done, running)
            # host sync, once per epoch; rank 0's dev F1 decides on every process
            f1 = main_value(accelerator, dev_f1() if accelerator.is_main_process else 0.0)
            curve.append(f1)
            lrs.append(float(optimizer.param_groups[0]["lr"]))
            losses.append(float(running) / max(1, n_batches))
            if f1 > best_f1:
                best_f1, best_epoch, since_best = f1, epoch, 0
                for keep, (_, p) in zip(best_state, params, strict=True):
                    keep.copy_(p.detach())
            else:
                since_best += 1
                if since_best >= hyper.patience and epoch >= hyper.min_epochs:
                    break
        with torch.no_grad():
            for keep, (_, p) in zip(best_state, params, strict=True):
                p.copy_(keep)
        wall = elapsed + time.perf_counter() - t0
        del net
        optimizer = scheduler = None  # (the closures' cells too: freed here)
        if own:
            prepared.release()
        else:
            accelerator.free_memory()  # this step's optimizer; gc.collect; empty_cache
        return TrainResult(
            epochs_run=epoch,
            best_epoch=best_epoch,
            best_dev_f1=best_f1,
            dev_curve=curve,
            train_loss=losses,
            wall_time_s=wall,
            train_examples_per_s=seen / wall if wall > 0 else 0.0,
            lr_curve=lrs,
        )
