"""A short calibration run: how fast a config's model trains and evaluates on this machine.

A few dozen training batches and one evaluation pass of the real training loop
(run/training.py, run/evaluation.py) on MASSIVE utterances (the shipped samples: realistic
lengths), with the model built from its config's shape and random weights (throughput does not
depend on the weights, so nothing is downloaded: "random-init shape-only"). The result is a
run/throughput.py record, which ``plan --estimate`` reads.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import time
from pathlib import Path

import torch

from hpc_forget import __version__
from hpc_forget.data.labels import LABELS
from hpc_forget.data.samples import SAMPLE_LOCALES
from hpc_forget.data.sources import load_massive
from hpc_forget.errors import EstimateError
from hpc_forget.files import utc_now
from hpc_forget.models.encode import encode
from hpc_forget.models.hub import TINY, load_config, load_tokenizer, quiet_transformers
from hpc_forget.models.tiny import train_tokenizer
from hpc_forget.run.evaluation import predict_words
from hpc_forget.run.throughput import Throughput
from hpc_forget.run.training import StepData, make_accelerator, mixed_precision, train_step
from hpc_forget.study.methods import StepHyper

log = logging.getLogger(__name__)

CALIBRATION_NOTE = "random-init shape-only calibration"


def _examples(n: int) -> list:
    corpus = load_massive("samples", list(SAMPLE_LOCALES))
    pool = [
        e
        for loc in corpus.locales
        for s in ("train", "dev", "test")
        for e in corpus.examples[loc].get(s, ())
    ]
    if not pool:
        raise EstimateError("calibration: the shipped MASSIVE samples are empty")
    return [pool[i % len(pool)] for i in range(n)]


def _tokenizer(model: str, tokenizer: str | None, cache_dir: str | None, work: Path):
    if tokenizer is not None:
        return load_tokenizer(tokenizer)
    if model == TINY:
        texts = [" ".join(e.words) for e in _examples(2000)]
        return train_tokenizer(texts, work / "tok", vocab_size=2000)
    try:
        return load_tokenizer(model, cache_dir=cache_dir)
    except Exception as exc:  # noqa: BLE001 - any failure: say which option fixes it
        raise EstimateError(
            f"calibration: cannot load the tokenizer of {model} ({str(exc).splitlines()[0]});"
            " pass --tokenizer FOLDER (e.g. an XLM-R sentencepiece.bpe.model folder)"
        ) from None


def calibrate(
    model: str,
    *,
    batch_size: int = 32,
    eval_batch_size: int = 512,
    batches: int = 24,
    precision: str = "auto",
    tokenizer: str | None = None,
    cache_dir: str | None = None,
    max_length: int = 128,
    cpu_threads: int = 0,
) -> Throughput:
    """Measure ``model``'s training and evaluation throughput here (random-init, its shape)."""
    with tempfile.TemporaryDirectory(prefix="hpc-forget-calibrate-") as tmp:
        tok = _tokenizer(model, tokenizer, cache_dir, Path(tmp))
        from transformers import AutoModelForTokenClassification

        config = load_config(model, cache_dir=cache_dir, num_labels=len(LABELS))
        config.vocab_size = max(config.vocab_size, len(tok))
        config.max_position_embeddings = max(config.max_position_embeddings, max_length + 2)
        label2id = {lab: i for i, lab in enumerate(LABELS)}
        train = encode(_examples(batches * batch_size), tok, label2id, max_length)
        evals = _examples(eval_batch_size)
        ev = encode(evals, tok, label2id, max_length)
        dev = encode(evals[:8], tok, label2id, max_length)
        accelerator = make_accelerator(precision, cpu_threads)
        torch.manual_seed(0)
        with quiet_transformers():
            net = AutoModelForTokenClassification.from_config(config)
        hyper = StepHyper(
            lr=5e-5,
            max_epochs=1,
            patience=1,
            lora_rank=0,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
        )
        log.info("calibrating %s: %d training batches of %d", model, batches, batch_size)
        result = train_step(
            net,
            StepData(train, dev, evals[:8]),
            hyper,
            accelerator=accelerator,
            labels=LABELS,
            pad_id=tok.pad_token_id,
            seed=0,
        )
        tokens = sum(len(x) for x in train.input_ids)
        t0 = time.perf_counter()
        predict_words(
            net,
            ev,
            batch_size=eval_batch_size,
            pad_id=tok.pad_token_id,
            pad_multiple=8,
            device=accelerator.device,
            autocast=accelerator.autocast,
        )
        if accelerator.device.type == "cuda":
            torch.cuda.synchronize()
        eval_s = time.perf_counter() - t0
    device = accelerator.device.type
    if device == "cuda":
        device = f"cuda ({torch.cuda.get_device_name(accelerator.device)})"
    prec = mixed_precision(precision)
    return Throughput(
        model=model,
        device=device,
        precision="fp32" if prec == "no" else prec,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        train_utt_per_s=result.train_examples_per_s,
        eval_utt_per_s=len(evals) / eval_s,
        tokens_per_s=tokens / result.wall_time_s,
        when=utc_now(),
        host=socket.gethostname(),
        package_version=__version__,
        source="calibration",
        note=CALIBRATION_NOTE,
    )
