"""Benchmark: our training + evaluation loop against Hugging Face Trainer, same data and model.

Both sides train one epoch on the same MASSIVE examples with the same model (random init of an
XLM-R-shaped config, same seed) and batch size, then predict the test set and score it with
seqeval. The baseline is Trainer with DataCollatorForTokenClassification (padding to the
longest example of each random batch) and Trainer.predict. The ratio is reported against the
baseline measured in the same run.

    python benchmarks/bench_training.py                  # tiny model, CPU
    python benchmarks/bench_training.py --size base      # xlm-roberta-base shapes (use a GPU)

With --tokenizer pointing at the rebuilt XLM-R tokenizer (shared/models/xlmr-tokenizer), the
sequence lengths are the real ones (MASSIVE: ~10 sub-words).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["tiny", "base"], default="tiny")
    ap.add_argument(
        "--tokenizer", default=None, help="tokenizer folder (default: train a tiny one)"
    )
    ap.add_argument("--train", type=int, default=2000, help="training examples")
    ap.add_argument("--test", type=int, default=300, help="test examples")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eval-batch-size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=2, help="timed repeats of each side (best kept)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import (
        AutoModelForTokenClassification,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
        XLMRobertaConfig,
    )

    from hpc_forget.data.labels import LABELS
    from hpc_forget.data.sources import load_massive
    from hpc_forget.data.splits import prepare_splits
    from hpc_forget.models.encode import encode
    from hpc_forget.models.hub import load_tokenizer, tiny_config
    from hpc_forget.models.params import XLMR_BASE_CONFIG
    from hpc_forget.models.tiny import train_tokenizer
    from hpc_forget.run.evaluation import predict_words, score_examples
    from hpc_forget.run.training import StepData, make_accelerator, train_step
    from hpc_forget.study.methods import StepHyper

    corpus = load_massive("samples", ["en-US"])
    splits = prepare_splits(corpus, "en-US", max_train=args.train, max_eval=args.test, seed=0)
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    if args.tokenizer:
        tok = load_tokenizer(args.tokenizer)
    else:
        tok = train_tokenizer(
            [" ".join(e.words) for e in splits.train], work / "tok", vocab_size=2000
        )
    label2id = {lab: i for i, lab in enumerate(LABELS)}
    train_enc = encode(list(splits.train), tok, label2id, 128)
    test_enc = encode(list(splits.test), tok, label2id, 128)
    if args.size == "tiny":
        config = tiny_config(len(tok), len(LABELS))
    else:
        config = XLMRobertaConfig(
            **{**XLMR_BASE_CONFIG, "vocab_size": len(tok), "num_labels": len(LABELS)}
        )
    device = "cuda" if torch.cuda.is_available() else "cpu"

    def fresh() -> torch.nn.Module:
        torch.manual_seed(0)
        return AutoModelForTokenClassification.from_config(config)

    def ours() -> tuple[float, float]:
        model = fresh()
        t0 = time.perf_counter()
        # one epoch; the dev evaluation inside train_step runs on the (small) test set here
        train_step(
            model,
            StepData(train_enc, test_enc, list(splits.test)),
            StepHyper(
                lr=5e-5,
                max_epochs=1,
                patience=1,
                lora_rank=0,
                batch_size=args.batch_size,
                eval_batch_size=args.eval_batch_size,
            ),
            accelerator=make_accelerator("auto"),
            labels=LABELS,
            pad_id=tok.pad_token_id,
            seed=0,
        )
        pred = predict_words(
            model,
            test_enc,
            batch_size=args.eval_batch_size,
            pad_id=tok.pad_token_id,
            pad_multiple=8,
            device=torch.device(device),
        )
        f1 = score_examples(list(splits.test), pred, LABELS)[0]
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, f1

    def rows(enc) -> list[dict]:
        return [
            {"input_ids": i, "labels": lab}
            for i, lab in zip(enc.input_ids, enc.labels, strict=True)
        ]

    def baseline() -> tuple[float, float]:
        model = fresh()
        targs = TrainingArguments(
            output_dir=str(work / "trainer"),
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.eval_batch_size,
            learning_rate=5e-5,
            num_train_epochs=1,
            save_strategy="no",
            eval_strategy="no",
            report_to=[],
            logging_strategy="no",
            disable_tqdm=True,
            seed=0,
            bf16=device == "cuda" and torch.cuda.is_bf16_supported(),
            use_cpu=device == "cpu",
            dataloader_num_workers=0,
        )
        collator = DataCollatorForTokenClassification(tok)
        trainer = Trainer(
            model=model, args=targs, train_dataset=rows(train_enc), data_collator=collator
        )
        t0 = time.perf_counter()
        trainer.train()
        # dev evaluation, as ours does once per epoch, then the test prediction
        out = None
        for _ in range(2):
            out = trainer.predict(rows(test_enc))
        pred_ids = out.predictions.argmax(-1)
        preds = []
        for k in range(len(test_enc.input_ids)):
            lab = out.label_ids[k]
            preds.append(pred_ids[k][lab != -100])
        f1 = score_examples(list(splits.test), preds, LABELS)[0]
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, f1

    base_times, our_times = [], []
    for _ in range(args.repeats):
        base_times.append(baseline())
        our_times.append(ours())
    b = min(t for t, _ in base_times)
    o = min(t for t, _ in our_times)
    lengths = [len(x) for x in train_enc.input_ids]
    result = {
        "device": device,
        "size": args.size,
        "train_examples": len(lengths),
        "mean_subwords": float(np.mean(lengths)),
        "batch_size": args.batch_size,
        "trainer_s": round(b, 3),
        "ours_s": round(o, 3),
        "speedup": round(b / o, 2),
        "trainer_f1": round(base_times[0][1], 4),
        "ours_f1": round(our_times[0][1], 4),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
