"""``hpc-forget bench``: our training and evaluation against Hugging Face Trainer, in one process.

Both sides get the same data, model config and initial weights, batch size, precision and
number of steps (docs/benchmarks.md):

- training: one epoch over ``steps x batch_size`` MASSIVE utterances (the shipped samples of
  en-US, de-DE, sw-KE and th-TH, cycled), lr 5e-5, linear decay, no warmup, no weight decay,
  gradients clipped at 1.0. Ours is :func:`run.training.train_step` (it also scores a dev set
  of 8 utterances once per epoch, inside the timed call); the baseline is ``Trainer.train``
  with ``DataCollatorForTokenClassification``;
- evaluation: one R row, every locale's test split, on the same weights for both sides (our
  trained model), so both F1s must agree: ours is the engine's R row,
  :func:`run.evaluation.predict_languages` (one pass over every locale's set) and
  :func:`run.evaluation.score_examples` per locale, the baseline ``Trainer.predict`` per locale
  and the same scoring.

Each phase is timed with ``time.perf_counter`` (after a CUDA synchronize on a GPU), the best of
``repeats``; per side: seconds, utterances/s, tokens/s (real sub-words, not padding), peak
memory and, on a GPU, MFU. The pure helpers (FLOPs, MFU, the GPU peak table, the rendering,
the throughput document) are tested on hand-computed values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import io
import logging
import math
import os
import platform
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpc_forget import __version__
from hpc_forget.data.samples import SAMPLE_LOCALES
from hpc_forget.errors import BenchError, first_line
from hpc_forget.files import utc_now, write_json
from hpc_forget.run.throughput import Throughput, throughput_document

log = logging.getLogger(__name__)

SIZES = ("tiny", "base")
DEVICES = ("cpu", "cuda")
#: The model name each size's throughput record carries (what ``plan --estimate`` matches).
MODEL_OF_SIZE = {"tiny": "tiny", "base": "xlm-roberta-base"}
BENCH_LOCALES = SAMPLE_LOCALES
DEFAULT_TOKENIZER = "xlm-roberta-base"
DEV_EXAMPLES = 8  # train_step scores a dev set once per epoch: a tiny one
LR = 5e-5
F1_TOLERANCE = 1e-6  # both sides score the same weights: their F1s must agree
MAX_LENGTH = 128
#: Speed-up targets (ours / Trainer, utterances per second) of issue #11, per device.
TARGETS = {"cpu": {"train": 1.5, "eval": 1.5}, "cuda": {"train": 3.0, "eval": 10.0}}

# ------------------------------------------------------------------------------ pure helpers

TERA = 1e12
#: Dense peak FLOP/s per precision (no sparsity), from the vendors' data sheets. fp32 is the
#: plain (non-tensor-core) rate: fp32 training here runs with TF32 off (run/training.py).
#: First match wins (a regular expression on torch.cuda.get_device_name, case-insensitive);
#: None: the GPU has no units for that precision, or it is not in the table.
GPU_PEAK_FLOPS: tuple[tuple[str, dict[str, float | None]], ...] = (
    (r"\bH200\b", {"bf16": 989.4 * TERA, "fp16": 989.4 * TERA, "fp32": 66.9 * TERA}),
    (r"\bH100\b.*\bPCIe\b", {"bf16": 756.0 * TERA, "fp16": 756.0 * TERA, "fp32": 51.2 * TERA}),
    (r"\bH100\b.*\bNVL\b", {"bf16": 835.5 * TERA, "fp16": 835.5 * TERA, "fp32": 60.0 * TERA}),
    (r"\bH100\b", {"bf16": 989.4 * TERA, "fp16": 989.4 * TERA, "fp32": 66.9 * TERA}),
    (r"\bA100\b", {"bf16": 312.0 * TERA, "fp16": 312.0 * TERA, "fp32": 19.5 * TERA}),
    (r"\bL4\b", {"bf16": 121.0 * TERA, "fp16": 121.0 * TERA, "fp32": 30.3 * TERA}),
    (r"\bV100\b.*\bPCIe\b", {"bf16": None, "fp16": 112.0 * TERA, "fp32": 14.0 * TERA}),
    (r"\bV100\b", {"bf16": None, "fp16": 125.0 * TERA, "fp32": 15.7 * TERA}),
    (r"\bT4\b", {"bf16": None, "fp16": 65.0 * TERA, "fp32": 8.1 * TERA}),
)


def peak_flops(device_name: str, precision: str) -> float | None:
    """The GPU's dense peak FLOP/s in ``precision`` (bf16, fp16, fp32); None when unknown."""
    for pattern, table in GPU_PEAK_FLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return table.get(precision)
    return None


def mfu(flops: float, seconds: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: ``flops / seconds / peak`` (0..1); None when the peak is
    unknown or nothing was timed (never 0 for "unknown")."""
    if peak is None or peak <= 0 or seconds <= 0:
        return None
    return flops / seconds / peak


def attention_flops_per_token(layers: int, hidden: int, seq_len: float) -> float:
    """Forward FLOPs per token of the attention scores and the weighted sum of values (not in
    ``2N``): ``2 x 2 x layers x seq_len x hidden`` (bidirectional: every token sees every other)."""
    return 4.0 * layers * seq_len * hidden


def eval_flops(
    nonembedding_params: int,
    tokens: int,
    *,
    layers: int = 0,
    hidden: int = 0,
    seq_len: float = 0.0,
) -> float:
    """FLOPs of a forward pass over ``tokens`` sub-words, the usual approximation: ``2 N
    tokens`` with N the non-embedding parameters (an embedding is a lookup, not a matmul),
    plus the attention term when a shape is given."""
    per_token = 2.0 * nonembedding_params + attention_flops_per_token(layers, hidden, seq_len)
    return per_token * tokens


def train_flops(
    nonembedding_params: int,
    tokens: int,
    *,
    layers: int = 0,
    hidden: int = 0,
    seq_len: float = 0.0,
) -> float:
    """FLOPs of training on ``tokens`` sub-words: three forward passes' worth (forward 2N,
    backward 4N per token: ``6 N tokens``, and three times the attention term)."""
    return 3.0 * eval_flops(
        nonembedding_params, tokens, layers=layers, hidden=hidden, seq_len=seq_len
    )


# ------------------------------------------------------------------------------ the result


@dataclass(frozen=True)
class Side:
    """One side (ours or Trainer) of one phase (training or evaluation), best of the repeats."""

    seconds: float
    utt_per_s: float
    tokens_per_s: float
    peak_mem_mib: float | None  # cuda: max_memory_allocated; cpu: peak process RSS
    start_mem_mib: float | None  # the same quantity when the phase started
    mfu: float | None = None  # GPU only
    cpu_seconds: float | None = None  # CPU only: the process's CPU time (all its threads)


def side(
    seconds: float,
    utterances: int,
    tokens: int,
    peak_mib: float | None,
    start_mib: float | None,
    flops: float | None = None,
    peak: float | None = None,
    cpu_seconds: float | None = None,
) -> Side:
    """A :class:`Side` from what was counted and timed (pure)."""
    rate = (lambda n: n / seconds) if seconds > 0 else (lambda n: 0.0)
    return Side(
        seconds=seconds,
        utt_per_s=rate(utterances),
        tokens_per_s=rate(tokens),
        peak_mem_mib=peak_mib,
        start_mem_mib=start_mib,
        mfu=mfu(flops, seconds, peak) if flops is not None else None,
        cpu_seconds=cpu_seconds,
    )


@dataclass(frozen=True)
class BenchResult:
    """Everything one ``hpc-forget bench`` measured, and the setup it measured it in."""

    size: str
    model: str  # the throughput record's model name
    device: str  # cpu | cuda
    device_name: str
    precision: str  # fp32 | bf16 | fp16
    threads: int
    batch_size: int
    eval_batch_size: int
    steps: int
    repeats: int
    locales: tuple[str, ...]
    tokenizer: str
    vocab_size: int
    layers: int
    hidden: int
    params: int
    nonembedding_params: int
    train_examples: int
    train_tokens: int
    eval_examples: int
    eval_tokens: int
    memory: str  # what peak_mem_mib measures
    train_ours: Side
    train_trainer: Side
    eval_ours: Side
    eval_trainer: Side
    f1_ours: dict[str, float]  # per locale, the same weights on both sides
    f1_trainer: dict[str, float]
    eval_words: int
    differing_words: int  # word predictions where the two sides disagree
    train_step_fast: bool | None  # whether train_step ran with its fast path (its default)
    torch_version: str
    transformers_version: str
    when: str
    host: str
    package_version: str = __version__
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def train_ratio(self) -> float:
        """Our training speed over Trainer's (utterances per second)."""
        return _ratio(self.train_ours.seconds, self.train_trainer.seconds)

    @property
    def eval_ratio(self) -> float:
        return _ratio(self.eval_ours.seconds, self.eval_trainer.seconds)

    @property
    def train_cpu_ratio(self) -> float | None:
        """The same on the process's CPU time (CPU runs): steadier on a shared machine."""
        return _cpu_ratio(self.train_ours, self.train_trainer)

    @property
    def eval_cpu_ratio(self) -> float | None:
        return _cpu_ratio(self.eval_ours, self.eval_trainer)

    @property
    def f1_difference(self) -> float:
        """The largest |F1 ours - F1 Trainer| over the locales (0 when the sides agree)."""
        return max((abs(self.f1_ours[k] - self.f1_trainer[k]) for k in self.f1_ours), default=0.0)

    @property
    def targets(self) -> dict[str, float]:
        return dict(TARGETS.get(self.device, TARGETS["cpu"]))

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["locales"] = list(self.locales)
        d["notes"] = list(self.notes)
        d["train_ratio"] = self.train_ratio
        d["eval_ratio"] = self.eval_ratio
        d["train_cpu_ratio"] = self.train_cpu_ratio
        d["eval_cpu_ratio"] = self.eval_cpu_ratio
        d["f1_difference"] = self.f1_difference
        d["targets"] = self.targets
        d["meets_targets"] = {
            "train": self.train_ratio >= self.targets["train"],
            "eval": self.eval_ratio >= self.targets["eval"],
        }
        return d


def _ratio(ours_s: float, trainer_s: float) -> float:
    return trainer_s / ours_s if ours_s > 0 else math.inf


def _cpu_ratio(ours: Side, trainer: Side) -> float | None:
    if ours.cpu_seconds is None or trainer.cpu_seconds is None:
        return None
    return _ratio(ours.cpu_seconds, trainer.cpu_seconds)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _num(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _x(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def format_bench(r: BenchResult) -> str:
    """The result as text: the setup, one line per side and phase, the ratios, the F1 check,
    and the row of docs/benchmarks.md's table (:func:`markdown_row`)."""
    mem = "peak GPU MiB" if r.device == "cuda" else "peak RSS MiB"
    lines = [
        f"hpc-forget bench: {r.model} ({r.layers} layers, hidden {r.hidden}, vocab"
        f" {r.vocab_size:,}; {r.params / 1e6:.1f} M parameters, {r.nonembedding_params / 1e6:.2f} M"
        " non-embedding, random init)",
        f"device: {r.device} ({r.device_name}), {r.precision}, {r.threads} thread(s);"
        f" torch {r.torch_version}, transformers {r.transformers_version}",
        f"training: {r.train_examples:,} utterances ({r.steps} steps of {r.batch_size},"
        f" {r.train_tokens:,} sub-words), one epoch, lr {LR:g}",
        f"evaluation: one R row, {len(r.locales)} test sets ({', '.join(r.locales)}):"
        f" {r.eval_examples:,} utterances, {r.eval_tokens:,} sub-words, batch {r.eval_batch_size}",
        f"best of {r.repeats} repeat(s)",
        "",
        f"{'':16}{'seconds':>10}{'CPU s':>10}{'utt/s':>12}{'tokens/s':>12}{mem:>14}{'MFU':>8}",
    ]
    for phase, ours, base, ratio, cpu_ratio, target in (
        (
            "train",
            r.train_ours,
            r.train_trainer,
            r.train_ratio,
            r.train_cpu_ratio,
            r.targets["train"],
        ),
        ("eval", r.eval_ours, r.eval_trainer, r.eval_ratio, r.eval_cpu_ratio, r.targets["eval"]),
    ):
        for who, s in (("ours", ours), ("Trainer", base)):
            lines.append(
                f"{phase + ' ' + who:16}{s.seconds:>10.2f}{_num(s.cpu_seconds, 2):>10}"
                f"{_num(s.utt_per_s):>12}{_num(s.tokens_per_s):>12}"
                f"{_num(s.peak_mem_mib, 0):>14}{_pct(s.mfu):>8}"
            )
        verdict = "meets" if ratio >= target else "below"
        on_cpu = "" if cpu_ratio is None else f"; on CPU time {cpu_ratio:.2f}x"
        lines.append(
            f"  {phase} ratio ours/Trainer: {ratio:.2f}x ({verdict} the {target:g}x target){on_cpu}"
        )
    lines += [
        "",
        f"eval F1 (mean of {len(r.locales)}, same weights): ours {_mean(list(r.f1_ours.values())):.4f},"
        f" Trainer {_mean(list(r.f1_trainer.values())):.4f}; largest difference"
        f" {r.f1_difference:.2g}; {r.differing_words:,} of {r.eval_words:,} word predictions differ",
    ]
    lines += [f"note: {n}" for n in r.notes]
    lines += ["", "docs/benchmarks.md row:", MARKDOWN_HEADER, MARKDOWN_RULE, markdown_row(r)]
    return "\n".join(lines)


MARKDOWN_COLUMNS = (
    "date",
    "size",
    "device",
    "precision",
    "threads",
    "steps x batch (eval batch)",
    "train ours utt/s",
    "train Trainer utt/s",
    "train ratio",
    "eval ours utt/s",
    "eval Trainer utt/s",
    "eval ratio",
    "CPU-time ratio train / eval",
    "peak MiB ours / Trainer (train)",
    "MFU train / eval (ours)",
)
MARKDOWN_HEADER = "| " + " | ".join(MARKDOWN_COLUMNS) + " |"
MARKDOWN_RULE = "|" + "|".join("---" for _ in MARKDOWN_COLUMNS) + "|"


def markdown_row(r: BenchResult) -> str:
    """One row of docs/benchmarks.md's results table (:data:`MARKDOWN_HEADER`)."""
    device = r.device if r.device == "cpu" else f"{r.device} ({r.device_name})"
    cells = (
        r.when[:10],
        r.size,
        device,
        r.precision,
        str(r.threads),
        f"{r.steps} x {r.batch_size} ({r.eval_batch_size})",
        _num(r.train_ours.utt_per_s),
        _num(r.train_trainer.utt_per_s),
        f"{r.train_ratio:.2f}x",
        _num(r.eval_ours.utt_per_s),
        _num(r.eval_trainer.utt_per_s),
        f"{r.eval_ratio:.2f}x",
        _x(r.train_cpu_ratio) + " / " + _x(r.eval_cpu_ratio),
        f"{_num(r.train_ours.peak_mem_mib, 0)} / {_num(r.train_trainer.peak_mem_mib, 0)}",
        f"{_pct(r.train_ours.mfu)} / {_pct(r.eval_ours.mfu)}",
    )
    return "| " + " | ".join(cells) + " |"


def throughput_record(r: BenchResult) -> Throughput:
    """Our side's rates as a throughput record (``plan --estimate --throughput``)."""
    device = r.device if r.device == "cpu" else f"cuda ({r.device_name})"
    return Throughput(
        model=r.model,
        device=device,
        precision=r.precision,
        batch_size=r.batch_size,
        eval_batch_size=r.eval_batch_size,
        train_utt_per_s=r.train_ours.utt_per_s,
        eval_utt_per_s=r.eval_ours.utt_per_s,
        tokens_per_s=r.train_ours.tokens_per_s,
        when=r.when,
        host=r.host,
        package_version=r.package_version,
        source="bench",
        note=(
            f"hpc-forget bench --size {r.size}: random init, vocab {r.vocab_size:,},"
            f" {r.steps} steps; {r.train_ratio:.2f}x / {r.eval_ratio:.2f}x Trainer"
            " (train / eval)"
        ),
    )


def bench_document(r: BenchResult) -> dict:
    """The file ``--out`` writes: a throughput file (one record, our side) that also holds
    the whole result under ``bench`` (read_throughput reads only format, version, records)."""
    return {**throughput_document([throughput_record(r)]), "bench": r.as_dict()}


def write_bench(path: str | os.PathLike, r: BenchResult) -> Path:
    """Write :func:`bench_document` to ``path`` (whole or not at all)."""
    p = Path(path)
    write_json(p, bench_document(r))
    return p


# ------------------------------------------------------------------------------ measuring

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_STATM = Path("/proc/self/statm")


def rss_mib() -> float | None:
    """This process's resident set size now (MiB), from /proc/self/statm; None elsewhere."""
    try:
        return int(_STATM.read_text().split()[1]) * _PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return None


class PeakRSS:
    """Samples the process's RSS from a background thread while a phase runs (every
    ``interval`` s); ``start`` and ``peak`` in MiB (None where /proc is not there)."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.start: float | None = None
        self.peak: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        now = rss_mib()
        if now is not None and (self.peak is None or now > self.peak):
            self.peak = now

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> PeakRSS:
        self.start = rss_mib()
        self.peak = self.start
        self._thread = threading.Thread(target=self._loop, name="bench-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()


@dataclass
class _Timed:
    seconds: float = 0.0
    cpu_seconds: float | None = None
    start_mib: float | None = None
    peak_mib: float | None = None


@contextmanager
def _timed(cuda: bool) -> Iterator[_Timed]:
    """Wall seconds and peak memory of the block (GPU: allocated; CPU: process RSS), and on
    CPU the process's CPU seconds (less disturbed than wall time by other jobs on the machine)."""
    import torch

    out = _Timed()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        out.start_mib = torch.cuda.memory_allocated() / 2**20
        t0 = time.perf_counter()
        yield out
        torch.cuda.synchronize()
        out.seconds = time.perf_counter() - t0
        out.peak_mib = torch.cuda.max_memory_allocated() / 2**20
        return
    with PeakRSS() as rss:
        c0, t0 = time.process_time(), time.perf_counter()
        yield out
        out.seconds = time.perf_counter() - t0
        out.cpu_seconds = time.process_time() - c0
    out.start_mib, out.peak_mib = rss.start, rss.peak


def _best(timings: Sequence[_Timed]) -> _Timed:
    return min(timings, key=lambda t: t.seconds)


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else platform.processor(), else "cpu"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _load_tokenizer(spec: str) -> Any:
    from hpc_forget.models.hub import load_tokenizer

    try:
        return load_tokenizer(spec)
    except Exception as exc:  # noqa: BLE001 - any failure: say which option fixes it
        raise BenchError(
            f"bench: cannot load the tokenizer {spec} ({first_line(exc)}); pass --tokenizer"
            " DIR|HUB-ID (e.g. a folder holding XLM-R's sentencepiece.bpe.model)"
        ) from None


def bench_data(locales: Sequence[str], n_train: int) -> tuple[list, list, dict[str, list]]:
    """(training examples, dev examples, test examples per locale) from the shipped samples:
    ``n_train`` training utterances cycled from every locale's train and dev splits, the first
    :data:`DEV_EXAMPLES` of them as the dev set, and each locale's test split."""
    from hpc_forget.data.sources import load_massive

    corpus = load_massive("samples", list(locales))
    pool = [e for loc in corpus.locales for s in ("train", "dev") for e in corpus.split(loc, s)]
    tests = {loc: corpus.split(loc, "test") for loc in corpus.locales}
    if not pool or not any(tests.values()):
        raise BenchError("bench: the shipped MASSIVE samples hold no examples of these locales")
    train = [pool[i % len(pool)] for i in range(n_train)]
    return train, pool[:DEV_EXAMPLES], {k: v for k, v in tests.items() if v}


def _model_config(size: str, vocab_size: int, num_labels: int) -> Any:
    from hpc_forget.models.hub import tiny_config

    if size == "tiny":
        return tiny_config(vocab_size, num_labels, max_positions=MAX_LENGTH + 2)
    from transformers import XLMRobertaConfig

    from hpc_forget.models.params import XLMR_BASE_CONFIG

    return XLMRobertaConfig(
        **{**XLMR_BASE_CONFIG, "vocab_size": vocab_size, "num_labels": num_labels}
    )


def count_params(model: Any) -> tuple[int, int]:
    """(all parameters, non-embedding parameters: without every nn.Embedding's weights)."""
    import torch

    total = sum(p.numel() for p in model.parameters())
    emb = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    return total, total - emb


def _trainer_rows(enc: Any) -> list[dict]:
    return [
        {"input_ids": i, "labels": lab} for i, lab in zip(enc.input_ids, enc.labels, strict=True)
    ]


def bench(
    device: str = "cpu",
    size: str = "tiny",
    *,
    tokenizer: str | None = None,
    steps: int = 200,
    batch_size: int = 32,
    eval_batch_size: int = 512,
    precision: str = "auto",
    threads: int = 1,
    repeats: int = 1,
    locales: Sequence[str] = BENCH_LOCALES,
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """Run both sides (ours, Trainer) on the same data, model and settings; see the module doc.

    ``threads``: torch's CPU threads for the whole process (0: torch's default). ``precision``:
    ``auto`` (bf16 on a GPU with bf16 units, else fp32), bf16, fp16 (GPU) or fp32; Trainer gets
    the same (``bf16`` / ``fp16`` in its arguments).
    """
    if device not in DEVICES:
        raise BenchError(f"bench: --device must be one of {', '.join(DEVICES)}, got {device!r}")
    if size not in SIZES:
        raise BenchError(f"bench: --size must be one of {', '.join(SIZES)}, got {size!r}")
    for name, v, least in (
        ("--steps", steps, 1),
        ("--batch-size", batch_size, 1),
        ("--eval-batch-size", eval_batch_size, 1),
        ("--repeats", repeats, 1),
        ("--threads", threads, 0),
    ):
        if v < least:
            raise BenchError(f"bench: {name} must be at least {least}, got {v}")
    say = progress or (lambda msg: log.info("%s", msg))

    import torch

    cuda = device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise BenchError("bench: --device cuda, but torch sees no CUDA GPU here; use --device cpu")
    from accelerate import Accelerator
    from transformers import AutoModelForTokenClassification

    from hpc_forget.data.labels import LABELS
    from hpc_forget.models.encode import encode
    from hpc_forget.models.hub import quiet_transformers
    from hpc_forget.run.evaluation import predict_languages, score_examples
    from hpc_forget.run.training import (
        StepData,
        choose_precision,
        make_accelerator,
        mixed_precision,
        train_step,
    )
    from hpc_forget.study.methods import StepHyper

    if threads > 0:
        torch.set_num_threads(threads)
    spec = tokenizer or DEFAULT_TOKENIZER
    tok = _load_tokenizer(spec)
    label2id = {lab: i for i, lab in enumerate(LABELS)}
    train_ex, dev_ex, tests = bench_data(locales, steps * batch_size)
    train_enc = encode(train_ex, tok, label2id, MAX_LENGTH)
    dev_enc = encode(dev_ex, tok, label2id, MAX_LENGTH)
    test_enc = {loc: encode(ex, tok, label2id, MAX_LENGTH) for loc, ex in tests.items()}
    train_tokens = sum(len(x) for x in train_enc.input_ids)
    eval_examples = sum(len(v) for v in tests.values())
    eval_tokens = sum(len(x) for e in test_enc.values() for x in e.input_ids)
    config = _model_config(size, len(tok), len(LABELS))

    if cuda or not torch.cuda.is_available():
        accelerator = make_accelerator(precision, threads)
        mixed = mixed_precision(precision)
    else:  # --device cpu on a GPU machine: make_accelerator would take the GPU
        mixed = choose_precision(precision, cuda=False, capability=None)
        accelerator = Accelerator(mixed_precision=mixed, cpu=True)
    dev = accelerator.device
    prec = "fp32" if mixed == "no" else mixed
    device_name = torch.cuda.get_device_name(dev) if cuda else cpu_name()
    peak = peak_flops(device_name, prec) if cuda else None

    def fresh() -> torch.nn.Module:
        torch.manual_seed(0)
        with quiet_transformers():
            net = AutoModelForTokenClassification.from_config(config)
        return net.to(dev)

    hyper = StepHyper(
        lr=LR,
        max_epochs=1,
        patience=1,
        lora_rank=0,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
    )
    pad_id = tok.pad_token_id
    # Trainer's output_dir (it saves nothing): removed at the end, or when collected
    work_dir = tempfile.TemporaryDirectory(prefix="hpc-forget-bench-")
    work = Path(work_dir.name)

    def trainer_args() -> Any:
        from transformers import TrainingArguments

        return TrainingArguments(
            output_dir=str(work / "trainer"),
            per_device_train_batch_size=batch_size,
            per_device_eval_batch_size=eval_batch_size,
            learning_rate=LR,
            num_train_epochs=1,
            save_strategy="no",
            eval_strategy="no",
            report_to=[],
            logging_strategy="no",
            disable_tqdm=True,
            seed=0,
            bf16=mixed == "bf16",
            fp16=mixed == "fp16",
            use_cpu=not cuda,
            dataloader_num_workers=0,
        )

    from transformers import DataCollatorForTokenClassification, Trainer

    collator = DataCollatorForTokenClassification(tok)

    def warm_up() -> None:
        """One untimed forward and backward: the first call's one-off costs (CUDA context,
        cuBLAS handles, oneDNN kernels) go to neither side."""
        from hpc_forget.data.batching import collate

        net = fresh()
        idx = list(range(min(batch_size, len(train_enc.input_ids))))
        batch = collate(train_enc.input_ids, train_enc.labels, idx, pad_id=pad_id, pad_multiple=8)
        with accelerator.autocast():
            net(**{k: v.to(dev) for k, v in batch.items()}).loss.backward()
        if cuda:
            torch.cuda.synchronize()

    def train_trainer() -> _Timed:
        net = fresh()
        with quiet_transformers():
            trainer = Trainer(
                model=net,
                args=trainer_args(),
                train_dataset=_trainer_rows(train_enc),
                data_collator=collator,
            )
            # Trainer prints its final metrics to stdout (PrinterCallback): keep --json clean
            with contextlib.redirect_stdout(io.StringIO()), _timed(cuda) as t:
                trainer.train()
        del trainer, net
        gc.collect()
        return t

    def train_ours() -> tuple[_Timed, torch.nn.Module]:
        net = fresh()
        with _timed(cuda) as t:
            train_step(
                net,
                StepData(train_enc, dev_enc, dev_ex),
                hyper,
                accelerator=accelerator,
                labels=LABELS,
                pad_id=pad_id,
                seed=0,
            )
        return t, net

    def eval_ours(net: torch.nn.Module) -> tuple[_Timed, dict[str, float], dict[str, list]]:
        with _timed(cuda) as t:  # the engine's R row: one pass over every language's test set
            preds = predict_languages(
                net,
                test_enc,
                batch_size=eval_batch_size,
                pad_id=pad_id,
                pad_multiple=hyper.pad_multiple,
                device=dev,
                autocast=accelerator.autocast,
            )
            f1s = {loc: score_examples(tests[loc], preds[loc], LABELS)[0] for loc in test_enc}
        return t, f1s, preds

    def eval_trainer(net: torch.nn.Module) -> tuple[_Timed, dict[str, float], dict[str, list]]:
        f1s: dict[str, float] = {}
        preds: dict[str, list] = {}
        with quiet_transformers():
            trainer = Trainer(model=net, args=trainer_args(), data_collator=collator)
            rows = {loc: _trainer_rows(enc) for loc, enc in test_enc.items()}
            with contextlib.redirect_stdout(io.StringIO()), _timed(cuda) as t:
                for loc in test_enc:
                    out = trainer.predict(rows[loc])
                    ids = out.predictions.argmax(-1)
                    preds[loc] = [ids[k][lab != -100] for k, lab in enumerate(out.label_ids)]
                    f1s[loc] = score_examples(tests[loc], preds[loc], LABELS)[0]
        del trainer
        return t, f1s, preds

    say(
        f"bench: {size} on {device} ({prec}), {steps} steps of {batch_size},"
        f" {eval_examples} test utterances, {repeats} repeat(s)"
    )
    warm_up()
    timings: dict[str, list[_Timed]] = {"tt": [], "to": [], "eo": [], "et": []}
    f1_ours: dict[str, float] = {}
    f1_base: dict[str, float] = {}
    differing = words = 0
    n_params = n_nonemb = 0
    for rep in range(1, repeats + 1):
        # odd repeats run Trainer first, even ones ours first: a drifting load on a shared
        # machine does not always favour the same side
        trainer_first = rep % 2 == 1
        say(f"repeat {rep}/{repeats}: training ({'Trainer' if trainer_first else 'ours'} first)")
        if trainer_first:
            timings["tt"].append(train_trainer())
        t, net = train_ours()
        timings["to"].append(t)
        if not trainer_first:
            timings["tt"].append(train_trainer())
        n_params, n_nonemb = count_params(net)
        say(f"repeat {rep}/{repeats}: evaluating one R row (predict_languages and Trainer.predict)")
        if trainer_first:
            t, f1_base, p_base = eval_trainer(net)
            timings["et"].append(t)
        t, f1_ours, p_ours = eval_ours(net)
        timings["eo"].append(t)
        if not trainer_first:
            t, f1_base, p_base = eval_trainer(net)
            timings["et"].append(t)
        differing = words = 0
        for loc, ps in p_ours.items():
            for a, b in zip(ps, p_base[loc], strict=True):
                words += len(a)
                differing += len(a) if len(a) != len(b) else int((a != b).sum())
        del net
        gc.collect()
    seq = train_tokens / max(1, len(train_enc.input_ids))
    eval_seq = eval_tokens / max(1, eval_examples)
    shape = {"layers": config.num_hidden_layers, "hidden": config.hidden_size}
    t_flops = train_flops(n_nonemb, train_tokens, seq_len=seq, **shape) if cuda else None
    e_flops = eval_flops(n_nonemb, eval_tokens, seq_len=eval_seq, **shape) if cuda else None

    def best(key: str, utts: int, tokens: int, flops: float | None) -> Side:
        b = _best(timings[key])
        return side(b.seconds, utts, tokens, b.peak_mib, b.start_mib, flops, peak, b.cpu_seconds)

    import transformers

    notes = [
        f"train_step also scores {DEV_EXAMPLES} dev utterances once per epoch, inside its"
        " timed call (Trainer: no evaluation during training)"
    ]
    if cuda and peak is None:
        notes.append(f"no peak FLOP/s known for {device_name} in {prec}: MFU not reported")
    if f1_ours and max(abs(f1_ours[k] - f1_base[k]) for k in f1_ours) > F1_TOLERANCE:
        notes.append("the two sides' F1s differ on the same weights: check the predictions")
    result = BenchResult(
        size=size,
        model=MODEL_OF_SIZE[size],
        device=device,
        device_name=device_name,
        precision=prec,
        threads=torch.get_num_threads(),
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        steps=steps,
        repeats=repeats,
        locales=tuple(tests),
        tokenizer=spec,
        vocab_size=int(config.vocab_size),
        layers=int(config.num_hidden_layers),
        hidden=int(config.hidden_size),
        params=n_params,
        nonembedding_params=n_nonemb,
        train_examples=len(train_ex),
        train_tokens=train_tokens,
        eval_examples=eval_examples,
        eval_tokens=eval_tokens,
        memory="torch.cuda.max_memory_allocated" if cuda else "peak process RSS (/proc/self/statm)",
        train_ours=best("to", len(train_ex), train_tokens, t_flops),
        train_trainer=best("tt", len(train_ex), train_tokens, t_flops),
        eval_ours=best("eo", eval_examples, eval_tokens, e_flops),
        eval_trainer=best("et", eval_examples, eval_tokens, e_flops),
        f1_ours=f1_ours,
        f1_trainer=f1_base,
        eval_words=words,
        differing_words=differing,
        train_step_fast=True,  # train_step's default, as the engine calls it
        torch_version=torch.__version__,
        transformers_version=transformers.__version__,
        when=utc_now(),
        host=socket.gethostname(),
        notes=tuple(notes),
    )
    work_dir.cleanup()
    return result
