"""Run tasks on this machine: for each step not yet in the store, train, evaluate, write.

Re-running is resuming: steps already in the store are skipped, and a sequential chain
continues from the checkpoint written after its last finished step. Every step starts from a
seed derived from (run seed, step), so a resumed chain computes exactly what an uninterrupted
one would have (on CPU; on GPUs up to the non-determinism of their kernels).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hpc_forget import __version__, files
from hpc_forget.errors import ConfigError
from hpc_forget.models.encode import concat_encoded
from hpc_forget.run.checkpoints import (
    MidStep,
    load_language_state,
    remove_language_states,
    remove_midsteps,
    resume_from_checkpoint,
    save_checkpoint,
    save_language_state,
)
from hpc_forget.run.merging import (
    Merge,
    MergeView,
    live_bases,
    live_trained,
    lora_modules,
    merge_into,
)
from hpc_forget.run.strategies import NoStrategy, StepContext, Strategy, get_strategy
from hpc_forget.run.training import (
    Preempted,
    Prepared,
    StepData,
    agreed_stop,
    make_accelerator,
    train_step,
)
from hpc_forget.store.store import Store
from hpc_forget.study.config import Advise, ExperimentConfig, config_to_dict
from hpc_forget.study.identity import run_settings, settings_digest
from hpc_forget.study.methods import (
    DISPLAY_NAME,
    METHOD_KIND,
    evaluated_languages,
    is_full,
    step_hyper,
    trained_languages,
)
from hpc_forget.study.planning import Task, plan

__all__ = ["Preempted", "run_task", "run_config", "provenance", "Workspace"]

log = logging.getLogger("hpc_forget")


def step_seed(run_seed: int, step: int) -> int:
    """A per-step seed, so a resumed chain repeats exactly what an uninterrupted one does."""
    h = hashlib.sha256(f"{run_seed}:{step}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------
# provenance


def _git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


@functools.cache
def _static_provenance() -> dict[str, str]:
    import accelerate
    import datasets
    import peft
    import transformers

    return {
        "package_version": __version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
        "datasets": datasets.__version__,
        "host": socket.gethostname(),
    }


def provenance(**extra: Any) -> dict[str, Any]:
    """Versions, host, container image and Slurm ids of the process writing a score."""
    env = os.environ
    d: dict[str, Any] = dict(_static_provenance())
    d["container_image"] = (
        env.get("APPTAINER_CONTAINER") or env.get("SINGULARITY_CONTAINER") or "none"
    )
    for k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT"):
        d[k.lower()] = env.get(k, "")
    d["written_at"] = files.utc_now()
    d.update(extra)
    return d


# --------------------------------------------------------------------------------------------
# data and model preparation, cached per process


@dataclass
class Workspace:
    """Per-process caches: corpus, splits, resolved model path, tokenizer, encodings."""

    cfg: ExperimentConfig
    _corpus: Any = None
    _splits: dict = field(default_factory=dict)
    _model_path: dict = field(default_factory=dict)
    _tokenizer: dict = field(default_factory=dict)
    _encoded: dict = field(default_factory=dict)
    registered: set = field(default_factory=set)  # run ids whose run file this process wrote
    _revision: dict = field(default_factory=dict)
    _base_models: Any = None

    @property
    def base_models(self) -> Any:
        """models.hub.BaseModels: each base model read from disk once per process; every
        task still starts from exactly the weights load_model gives for its seed."""
        if self._base_models is None:
            from hpc_forget.models.hub import BaseModels

            self._base_models = BaseModels()
        return self._base_models

    @property
    def corpus(self) -> Any:
        if self._corpus is None:
            from hpc_forget.data.sources import load_massive

            d = self.cfg.data
            self._corpus = load_massive(d.source, d.languages, skip_invalid=d.skip_invalid)
        return self._corpus

    def splits(self, locale: str, seed: int, fraction: float | None = None) -> Any:
        """The splits of ``locale`` (train subsampled to ``fraction``; None: the config's
        largest data-scale fraction)."""
        d = self.cfg.data
        fraction = max(d.train_fractions) if fraction is None else fraction
        key = (locale, seed, fraction)
        if key not in self._splits:
            from hpc_forget.data.splits import prepare_splits

            self._splits[key] = prepare_splits(
                self.corpus,
                locale,
                max_train=d.max_train,
                max_eval=d.max_eval,
                train_fraction=fraction,
                seed=seed,
                missing_train=d.missing_train,
                dev_fraction_for_train=d.dev_fraction_for_train,
            )
        return self._splits[key]

    @property
    def cache_dir(self) -> str:
        return self.cfg.cache_dir or str(Path(self.cfg.store) / "cache")

    def model_path(self, spec: str) -> str:
        if spec not in self._model_path:
            from hpc_forget.models.tiny import resolve_model_spec

            def texts() -> list[str]:
                # The tiny preset's tokenizer is trained on the study's own training texts
                # (seed 0 subsample: one tokenizer per study, whatever the run seed).
                return [
                    " ".join(ex.words)
                    for loc in self.cfg.data.languages
                    for ex in self.splits(loc, 0).train
                ]

            self._model_path[spec] = resolve_model_spec(
                spec, texts_fn=texts, cache_dir=self.cache_dir
            )
        return self._model_path[spec]

    def revision(self, spec: str) -> str:
        """The weights ``spec`` resolves to here (models.resolved_revision), once per process."""
        if spec not in self._revision:
            from hpc_forget.models.tiny import resolved_revision

            self._revision[spec] = resolved_revision(self.model_path(spec), self.cache_dir)
        return self._revision[spec]

    def tokenizer(self, path: str) -> Any:
        if path not in self._tokenizer:
            from hpc_forget.models.hub import load_tokenizer

            self._tokenizer[path] = load_tokenizer(path, cache_dir=self.cache_dir)
        return self._tokenizer[path]

    def encoded(
        self, path: str, locale: str, split: str, seed: int, fraction: float | None = None
    ) -> tuple[Any, list[Any]]:
        key = (path, locale, split, seed, fraction)
        if key not in self._encoded:
            from hpc_forget.data.labels import LABELS
            from hpc_forget.models.encode import encode

            examples = list(getattr(self.splits(locale, seed, fraction), split))
            label2id = {lab: i for i, lab in enumerate(LABELS)}
            enc = encode(examples, self.tokenizer(path), label2id, self.cfg.train.max_length)
            self._encoded[key] = (enc, examples)
        return self._encoded[key]


# --------------------------------------------------------------------------------------------
# running


def _fresh_model(ws: Workspace, task: Task, seed: int) -> tuple[torch.nn.Module, str]:
    from hpc_forget.data.labels import LABELS
    from hpc_forget.models.lora import add_lora

    path = ws.model_path(task.key.model)
    seed_everything(seed)
    model = ws.base_models.fresh(path, list(LABELS), cache_dir=ws.cache_dir, seed=seed)
    if not is_full(task.key.rank):
        model = add_lora(
            model,
            task.key.rank,
            dropout=ws.cfg.train.lora_dropout,
            train_head=ws.cfg.train.lora_head == "train",
        )
    return model, path


@dataclass
class _Trained:
    """One training pass of a step (before_step, train_step, after_step) and what it used."""

    result: Any
    ctx: StepContext
    data: StepData
    trainable: int
    accelerator: Any
    t0: float
    midstep: MidStep


def _train(
    ws: Workspace,
    task: Task,
    model: torch.nn.Module,
    path: str,
    step: int,
    train_langs: tuple[str, ...],
    *,
    should_stop: Callable[[], bool],
    progress: bool,
    strategy: Strategy,
    state: dict[str, Any],
    prepared: Prepared,
) -> _Trained:
    from hpc_forget.data.labels import LABELS

    key, tc = task.key, ws.cfg.train
    seed = step_seed(key.seed, step)
    hyper = step_hyper(key.method, key.rank, tc)
    data_of = _data_of(ws, task, path)
    train_enc, _ = concat_encoded([data_of(loc, "train") for loc in train_langs])
    dev_enc, dev_ex = concat_encoded([data_of(loc, "dev") for loc in train_langs])
    pad_id = _pad_id(ws, path)
    accelerator = prepared.accelerator
    seed_everything(seed)
    t0 = time.perf_counter()
    ctx = StepContext(
        run_id=task.run_id,
        step=step,
        n_steps=len(task.steps),
        trained=train_langs,
        hyper=hyper,
        seed=seed,
        state=state,
        earlier=tuple(task.steps[:step]) if task.kind == "sequential" else (),
        run_seed=key.seed,
        pad_id=pad_id,
        data_of=data_of,
    )
    data = strategy.before_step(
        model, StepData(train=train_enc, dev=dev_enc, dev_examples=dev_ex), ctx
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    label = f"{task.task_id} step {step + 1}/{len(task.steps)}"
    if is_posthoc_merge(task):
        label = f"{task.task_id} {train_langs[0]} ({step + 1}/{len(task.languages)})"
    midstep = midstep_of(ws, task, step, label)
    result = train_step(
        model,
        data,
        hyper,
        accelerator=accelerator,
        labels=LABELS,
        pad_id=pad_id,
        seed=seed,
        should_stop=should_stop,
        progress=progress,
        strategy=strategy,
        ctx=ctx,
        prepared=prepared,
        midstep=midstep,
    )
    strategy.after_step(model, ctx)
    return _Trained(result, ctx, data, trainable, accelerator, t0, midstep)


def midstep_of(ws: Workspace, task: Task, step: int, label: str) -> MidStep:
    """Where step ``step`` of ``task`` (a merge: language ``step``) keeps its mid-step
    checkpoint; periodic every ``train.checkpoint_minutes`` (0: only on a stop request)."""
    minutes = ws.cfg.train.checkpoint_minutes
    return MidStep(ws.cfg, task.run_id, step, label=label, interval_s=60.0 * minutes)


def _data_of(ws: Workspace, task: Task, path: str) -> Callable[[str, str], tuple[Any, list[Any]]]:
    def data_of(locale: str, split: str) -> tuple[Any, list[Any]]:
        return ws.encoded(path, locale, split, task.key.seed, task.key.data_scale)

    return data_of


def _pad_id(ws: Workspace, path: str) -> int:
    tok = ws.tokenizer(path)
    return tok.pad_token_id if tok.pad_token_id is not None else 0


def _test(
    ws: Workspace,
    task: Task,
    model: torch.nn.Module,
    path: str,
    langs: tuple[str, ...],
    accelerator: Any,
) -> tuple[dict[str, float], int, float]:
    """Test F1 of ``model`` on each of ``langs`` (one pass over all their test sets):
    (scores, truncated words, seconds)."""
    from hpc_forget.data.labels import LABELS
    from hpc_forget.run.evaluation import predict_languages, score_examples

    hyper = step_hyper(task.key.method, task.key.rank, ws.cfg.train)
    data_of, pad_id = _data_of(ws, task, path), _pad_id(ws, path)
    t_eval = time.perf_counter()
    sets = {loc: data_of(loc, "test") for loc in langs}
    preds = predict_languages(
        model,
        {loc: enc for loc, (enc, _) in sets.items()},
        batch_size=hyper.eval_batch_size,
        pad_id=pad_id,
        pad_multiple=hyper.pad_multiple,
        device=accelerator.device,
        autocast=accelerator.autocast,
    )
    scores: dict[str, float] = {}
    dropped = 0
    for loc, (_, examples) in sets.items():
        scores[loc], d = score_examples(examples, preds[loc], LABELS)
        dropped += d
    return scores, dropped, time.perf_counter() - t_eval


def _put(
    ws: Workspace,
    task: Task,
    store: Store,
    step: int,
    accelerator: Any,
    *,
    scores: dict[str, float],
    dev_curve: list[float],
    meta: dict[str, Any],
) -> None:
    if accelerator.is_main_process:  # data parallel: one writer per step
        if task.run_id not in ws.registered:
            register_run(task, ws.cfg, store)
            ws.registered.add(task.run_id)
        store.put_step(
            task.run_id,
            step,
            scores=scores,
            dev_curve=dev_curve,
            meta=meta,
            provenance=provenance(model_revision=ws.revision(task.key.model)),
        )
    accelerator.wait_for_everyone()


def _setup_meta(hyper: Any, accelerator: Any) -> dict[str, Any]:
    """What every stored step records of its device and hyper-parameters."""
    return {
        "device": str(accelerator.device),
        "mixed_precision": accelerator.mixed_precision,
        "lr": hyper.lr,
        "head_lr": hyper.head_lr,
        "max_epochs": hyper.max_epochs,
        "patience": hyper.patience,
        "min_epochs": hyper.min_epochs,
    }


def _run_step(
    ws: Workspace,
    task: Task,
    model: torch.nn.Module,
    path: str,
    step: int,
    *,
    store: Store,
    should_stop: Callable[[], bool],
    progress: bool,
    strategy: Strategy,
    state: dict[str, Any],
    prepared: Prepared,
) -> StepContext:
    train_langs = trained_languages(task.kind, task.steps, task.languages, step)
    test_langs = evaluated_languages(task.kind, task.languages, step)
    t = _train(
        ws,
        task,
        model,
        path,
        step,
        train_langs,
        should_stop=should_stop,
        progress=progress,
        strategy=strategy,
        state=state,
        prepared=prepared,
    )
    result, hyper, accelerator = t.result, t.ctx.hyper, t.accelerator
    scores, dropped, eval_s = _test(ws, task, model, path, test_langs, accelerator)
    meta = {
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "best_dev_f1": result.best_dev_f1,
        "wall_time_s": time.perf_counter() - t.t0,
        "train_time_s": result.wall_time_s,
        "eval_time_s": eval_s,
        "train_examples_per_s": result.train_examples_per_s,
        "train_examples": len(t.data.train.input_ids),
        "trainable_params": t.trainable,
        **_setup_meta(hyper, accelerator),
        "step_seed": t.ctx.seed,
        "trained": ",".join(train_langs),
        "train_loss": result.train_loss,
        "truncated_words": dropped,
    }
    meta["processes"] = accelerator.num_processes
    _put(ws, task, store, step, accelerator, scores=scores, dev_curve=result.dev_curve, meta=meta)
    if task.kind != "sequential" and accelerator.is_main_process:
        t.midstep.remove()  # the step is stored (a chain's: once its checkpoint is written)
    test_avg = sum(scores.values()) / len(scores)
    log.info(
        "%s step %d/%d (%s): %d epochs (best %d), dev F1 %.3f, test F1 %.3f over %d language(s), %.1f s",
        task.task_id,
        step + 1,
        len(task.steps),
        "+".join(train_langs) if len(train_langs) <= 3 else f"{len(train_langs)} languages",
        result.epochs_run,
        result.best_epoch,
        result.best_dev_f1,
        test_avg,
        len(scores),
        meta["wall_time_s"],
    )
    return t.ctx


def is_posthoc_merge(task: Task) -> bool:
    """A per-language method with a merging strategy: planned as one ``joint`` task (step
    "merged") that trains each language's model, merges them and tests the merged model."""
    return task.kind == "joint" and METHOD_KIND[task.key.method] == "per-language"


def _run_merged(
    ws: Workspace,
    task: Task,
    store: Store,
    *,
    should_stop: Callable[[], bool],
    progress: bool,
    strategy: Strategy,
    accelerator: Any,
) -> int:
    """MONO / NON-SHARED LoRA + merge: train one model per language, every one from the same
    initial weights with the method's per-language hyper-parameters (language i trains with
    the seed of step i), keep each trained state (a checkpoint per language, so a rerun goes
    on with the next language), merge them (:mod:`hpc_forget.run.merging`; linear: equal
    weights; task arithmetic and TIES relative to the shared initial weights), test the merged
    model on every language and write step 0."""
    if not isinstance(strategy, Merge):
        raise ConfigError(
            f"task {task.task_id}: a joint run of {task.key.method} is a merge of per-language"
            f" models, but its strategy is {task.key.strategy}"
        )
    t0 = time.perf_counter()
    model, path = _fresh_model(ws, task, step_seed(task.key.seed, -1))
    prepared = Prepared(accelerator, model)  # once for all the languages' trainings
    try:
        return _merge_languages(
            ws,
            task,
            store,
            (model, path, prepared),
            strategy,
            t0,
            should_stop=should_stop,
            progress=progress,
        )
    finally:
        prepared.release()


def _merge_languages(
    ws: Workspace,
    task: Task,
    store: Store,
    trained: tuple[torch.nn.Module, str, Prepared],
    strategy: Merge,
    t0: float,
    *,
    should_stop: Callable[[], bool],
    progress: bool,
) -> int:
    """_run_merged's work on its model (prepared once)."""
    model, path, prepared = trained
    cfg, n, accelerator = ws.cfg, len(task.languages), prepared.accelerator
    initial = {k: p.detach().cpu().clone() for k, p in model.named_parameters() if p.requires_grad}
    records: dict[str, dict[str, Any]] = {}
    states: list[dict[str, torch.Tensor]] = []
    for i, lang in enumerate(task.languages):
        saved = load_language_state(model, cfg, task.run_id, i, lang)
        if saved is None:
            if should_stop():
                raise Preempted(f"stopped before language {i + 1}/{n} of the merge")
            _load_trainable(model, initial)
            t = _train(
                ws,
                task,
                model,
                path,
                i,
                (lang,),
                should_stop=should_stop,
                progress=progress,
                strategy=NoStrategy(),
                state={},
                prepared=prepared,
            )
            r = t.result
            rec = {
                "epochs_run": r.epochs_run,
                "best_epoch": r.best_epoch,
                "best_dev_f1": r.best_dev_f1,
                "train_time_s": r.wall_time_s,
                "train_examples": len(t.data.train.input_ids),
                "step_seed": t.ctx.seed,
            }
            if accelerator.is_main_process:
                save_language_state(model, cfg, task.run_id, i, lang, rec)
                t.midstep.remove()
            accelerator.wait_for_everyone()
            saved = load_language_state(model, cfg, task.run_id, i, lang)
            if saved is None:  # not readable right after writing it: keep it in memory
                saved = ({k: p.detach().cpu().clone() for k, p in live_trained(model).items()}, rec)
            log.info(
                "%s: %s trained for the merge (%d/%d): %d epochs, dev F1 %.3f",
                task.task_id,
                lang,
                i + 1,
                n,
                r.epochs_run,
                r.best_dev_f1,
            )
        states.append(saved[0])
        records[lang] = saved[1]
    m = strategy
    _load_trainable(model, initial)
    modules = lora_modules(model)
    bases = live_bases(model, modules)
    t_merge = time.perf_counter()
    merge_into(
        model,
        m.how,
        [MergeView(modules, s, bases) for s in states],
        MergeView(modules, initial, bases) if m.how != "linear" else None,
        scale=m.scale,
        density=m.density,
    )
    merge_s = time.perf_counter() - t_merge
    model.to(accelerator.device)
    scores, dropped, eval_s = _test(ws, task, model, path, task.languages, accelerator)
    hyper = step_hyper(task.key.method, task.key.rank, cfg.train)
    meta = {
        "merge": m.how,
        "merged_languages": ",".join(task.languages),
        "language_epochs": {lang: r["epochs_run"] for lang, r in records.items()},
        "language_best_dev_f1": {lang: r["best_dev_f1"] for lang, r in records.items()},
        "languages_trained": records,
        "epochs_run": sum(r["epochs_run"] for r in records.values()),
        "wall_time_s": time.perf_counter() - t0,
        "train_time_s": sum(r["train_time_s"] for r in records.values()),
        "merge_time_s": merge_s,
        "eval_time_s": eval_s,
        "train_examples": sum(r["train_examples"] for r in records.values()),
        "trainable_params": sum(p.numel() for p in initial.values()),
        **_setup_meta(hyper, accelerator),
        "init_seed": step_seed(task.key.seed, -1),
        "trained": ",".join(task.languages),
        "truncated_words": dropped,
        "processes": accelerator.num_processes,
    }
    _put(ws, task, store, 0, accelerator, scores=scores, dev_curve=[], meta=meta)
    if accelerator.is_main_process:
        remove_language_states(cfg, task.run_id)
        remove_midsteps(cfg, task.run_id)
    log.info(
        "%s: %d languages merged (%s), test F1 %.3f over %d language(s), %.1f s",
        task.task_id,
        n,
        m.how,
        sum(scores.values()) / len(scores),
        len(scores),
        meta["wall_time_s"],
    )
    return 1


def _load_trainable(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for k, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(state[k])


def is_main_process() -> bool:
    """False only in the non-zero ranks of a multi-process (`accelerate launch`) job."""
    from accelerate import PartialState

    return PartialState().is_main_process


def task_settings(task: Task, cfg: ExperimentConfig) -> dict[str, Any]:
    """The settings ``task``'s run id stands for, recomputed from ``cfg`` and checked.

    A task read from a manifest carries only the digest; if ``cfg`` resolves to other
    settings (the config changed since the plan), its scores would be filed under the wrong
    run, so that is an error.
    """
    from hpc_forget.errors import ConfigError

    settings = run_settings(cfg, task.key.method, task.key.rank)
    if settings_digest(settings) != task.key.settings:
        raise ConfigError(
            f"task {task.task_id}: the config's settings no longer match the planned run"
            " (the config changed after planning); plan or submit again"
        )
    return settings


def check_same_weights(ws: Workspace, task: Task, store: Store) -> None:
    """Stored steps of this run were computed on the weights the model spec resolves to now.

    A pinned revision (``NAME@REV``) is part of the run id; an unpinned Hub model or a rebuilt
    tiny model can change behind the same spec, and its old scores must not be skipped over
    or continued from as if they were this model's.
    """
    from hpc_forget.errors import ModelError, StoreError

    try:
        rec = store.run(task.run_id)  # it has stored steps, so its run file exists
    except StoreError:
        return
    stored = {p.get("model_revision") for p in rec.provenance.values()} - {None, "unknown"}
    if not stored:
        return
    now = ws.revision(task.key.model)
    if now != "unknown" and now not in stored:
        raise ModelError(
            f"{task.task_id}: its stored steps were computed with model {task.key.model} at"
            f" {sorted(stored)[0]}, which now resolves to {now} — pin the revision in `models`"
            f" (NAME@REVISION), or use a new store for the new weights"
        )


def register_run(task: Task, cfg: ExperimentConfig, store: Store) -> None:
    """Write the run file; called just before the run's first scores are written, so a run
    that fails earlier (bad data, a missing model) leaves nothing in the store."""
    from hpc_forget.data.labels import LABELS

    if not is_main_process():
        return
    store.put_run(
        task.run_id,
        key=task.key.as_dict(),
        kind=task.kind,
        languages=list(task.languages),
        steps=list(task.steps),
        labels=list(LABELS),
        config=config_to_dict(cfg),
        settings=task_settings(task, cfg),
    )


def run_task(
    task: Task,
    cfg: ExperimentConfig,
    store: Store,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    progress: bool = False,
    workspace: Workspace | None = None,
) -> int:
    """Run the steps of ``task`` that the store does not hold yet; returns how many ran.

    Raises Preempted when ``should_stop()`` turns true; what is in the store and the last
    checkpoint stay consistent, so running the task again resumes.
    """
    ws = workspace or Workspace(cfg)
    task_settings(task, cfg)  # before any work: the task must be this config's
    done = store.done_steps(task.run_id)
    if done:
        check_same_weights(ws, task, store)
    todo = [i for i in task.step_indices if i not in done]
    if not todo:
        return 0
    accelerator = make_accelerator(cfg.train.precision, cfg.train.cpu_threads)
    check_processes(task, cfg, accelerator.num_processes)
    should_stop = agreed_stop(accelerator, should_stop)  # every rank stops, or none
    strategy = get_strategy(task.key.strategy)
    if is_posthoc_merge(task):
        return _run_merged(
            ws,
            task,
            store,
            should_stop=should_stop,
            progress=progress,
            strategy=strategy,
            accelerator=accelerator,
        )
    run_step = functools.partial(
        _run_step,
        ws,
        task,
        store=store,
        should_stop=should_stop,
        progress=progress,
        strategy=strategy,
        state={},
    )
    if task.kind == "sequential":
        model, path = _fresh_model(ws, task, step_seed(task.key.seed, -1))
        prepared = Prepared(accelerator, model)  # once per task (the chain's one model)
        try:
            return _run_chain(task, cfg, model, path, todo[0], run_step, strategy, prepared)
        finally:
            prepared.release()
            del prepared, model
    ran = 0
    for step in todo:
        if should_stop():
            raise Preempted(f"stopped before step {step + 1}/{len(task.steps)}")
        model, path = _fresh_model(ws, task, step_seed(task.key.seed, -1 - step))
        prepared = Prepared(accelerator, model)  # each step's own model: once per step
        try:
            ctx = run_step(model, path, step, prepared=prepared)
            strategy.after_run(model, ctx)
        finally:
            prepared.release()
            del prepared, model
        ran += 1
    return ran


def check_processes(task: Task, cfg: ExperimentConfig, processes: int) -> None:
    """This job runs ``train.processes`` processes: the world size is part of the run's
    identity (each process trains on its share of every batch list, so the effective batch
    is ``batch_size`` x processes), and scores of another world size must not be filed here."""
    if processes != cfg.train.processes:
        raise ConfigError(
            f"task {task.task_id}: {processes} process(es) run it, but train.processes is"
            f" {cfg.train.processes}; launch {cfg.train.processes} process(es) (one per GPU),"
            f" or set train.processes: {processes} (a new run identity)"
        )


def _run_chain(
    task: Task,
    cfg: ExperimentConfig,
    model: torch.nn.Module,
    path: str,
    first: int,
    run_step: Callable[..., StepContext],
    strategy: Strategy,
    prepared: Prepared,
) -> int:
    """The steps of a sequential task from ``first`` on, on its one model (prepared once)."""
    n, state = len(task.steps), run_step.keywords["state"]
    should_stop = run_step.keywords["should_stop"]
    if strategy.needs_initial:
        state["initial"] = {
            k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad
        }
    # A missing or damaged checkpoint: recompute from the newest usable one (or step 1);
    # resume_from_checkpoint logs it in one line.
    start = resume_from_checkpoint(
        model,
        cfg,
        task.run_id,
        first,
        n_steps=n,
        label=task.task_id,
        on_extra=lambda t: strategy.load_state_tensors(t, state),
    )
    ran = 0
    for step in range(start, n):
        if should_stop():
            raise Preempted(f"stopped before step {step + 1}/{n}")
        # A step already in the store is recomputed only to rebuild the weights of a
        # missing checkpoint; put_step is idempotent.
        ctx = run_step(model, path, step, prepared=prepared)
        if is_main_process():
            extra = strategy.state_tensors(state)
            save_checkpoint(model, cfg, task.run_id, step, n_steps=n, extra=extra)
        ran += 1
    strategy.after_run(model, ctx)
    return ran


def run_config(
    cfg: ExperimentConfig,
    *,
    tasks: list[Task] | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Execute the plan on this machine, without Slurm. Returns {task_id: steps run}."""
    store = Store(cfg.store)
    store.check_writable()  # a read-only store is an error before any training
    tasks = plan(cfg) if tasks is None else tasks
    ws = Workspace(cfg)
    out: dict[str, int] = {}
    items = tasks
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(tasks, desc="tasks")
    for task in items:
        t0 = time.perf_counter()
        out[task.task_id] = run_task(task, cfg, store, workspace=ws, progress=progress)
        if out[task.task_id]:
            log.info(
                "%s (%s): %d step(s) in %.1f s",
                task.task_id,
                DISPLAY_NAME[task.key.method],
                out[task.task_id],
                time.perf_counter() - t0,
            )
    return out


@dataclass(frozen=True)
class StudyRun:
    """What `hpc-forget run` did: the config, its tasks, steps run per task, seconds taken."""

    cfg: ExperimentConfig
    tasks: list[Task]
    ran: dict[str, int]
    seconds: float


def run_study(
    spec: str,
    *,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
    advise: Advise | None = None,
) -> StudyRun:
    """`hpc-forget run`: load a config and run what the store lacks. The printed summary is
    :func:`hpc_forget.analysis.summary.run_message` of the result (the CLI composes both).
    ``advise`` resolves ``{advised: STORE}`` orders (study.config.Advise; the CLI passes the
    analysis's advisor, which run/ may not import)."""
    from hpc_forget.study.config import load_config

    cfg = load_config(spec, overrides=overrides, advise=advise)
    t0 = time.perf_counter()
    tasks = plan(cfg)
    ran = run_config(cfg, tasks=tasks, progress=progress)
    return StudyRun(cfg=cfg, tasks=tasks, ran=ran, seconds=time.perf_counter() - t0)
