"""hpc-forget bench: FLOPs, MFU and the GPU peak table on hand-computed values, the rendering,
the throughput file it writes (which plan --estimate reads), one tiny end-to-end run, the CLI."""

from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

from hpc_forget.cli import cli
from hpc_forget.run import bench as B
from hpc_forget.run.throughput import read_throughput

T = 1e12


@pytest.mark.parametrize(
    ("name", "precision", "peak"),
    [
        ("NVIDIA H200", "bf16", 989.4 * T),
        ("NVIDIA H100 80GB HBM3", "bf16", 989.4 * T),
        ("NVIDIA H100 80GB HBM3", "fp32", 66.9 * T),
        ("NVIDIA H100 PCIe", "bf16", 756.0 * T),
        ("NVIDIA H100 NVL", "fp16", 835.5 * T),
        ("NVIDIA A100-SXM4-80GB", "bf16", 312.0 * T),
        ("NVIDIA A100 80GB PCIe", "fp32", 19.5 * T),
        ("NVIDIA L4", "bf16", 121.0 * T),
        ("Tesla V100-SXM2-32GB", "fp16", 125.0 * T),
        ("Tesla V100-PCIE-16GB", "fp16", 112.0 * T),
        ("Tesla T4", "fp32", 8.1 * T),
        ("Tesla V100-SXM2-32GB", "bf16", None),  # no bf16 units
        ("Tesla T4", "bf16", None),
        ("NVIDIA L40S", "bf16", None),  # not an L4; not in the table
        ("NVIDIA GeForce RTX 4090", "bf16", None),
    ],
)
def test_peak_flops_table(name, precision, peak):
    assert B.peak_flops(name, precision) == peak


def test_mfu_is_flops_over_time_over_peak_and_none_when_unknown():
    assert B.mfu(3e12, 2.0, 1e13) == pytest.approx(0.15)
    assert B.mfu(3e12, 2.0, None) is None
    assert B.mfu(3e12, 0.0, 1e13) is None


def test_flops_six_n_for_training_two_n_for_evaluation():
    assert B.train_flops(1000, 10) == 60_000
    assert B.eval_flops(1000, 10) == 20_000
    # attention: 4 x layers x seq x hidden per token forward = 4*2*5*4 = 160; training x3
    assert B.attention_flops_per_token(2, 4, 5.0) == 160
    assert B.train_flops(1000, 10, layers=2, hidden=4, seq_len=5.0) == (6000 + 480) * 10
    assert B.eval_flops(1000, 10, layers=2, hidden=4, seq_len=5.0) == (2000 + 160) * 10


def test_side_rates_and_mfu():
    s = B.side(2.0, 100, 1000, 512.0, 256.0, flops=1e12, peak=1e12)
    assert (s.utt_per_s, s.tokens_per_s, s.peak_mem_mib, s.start_mem_mib) == (50, 500, 512, 256)
    assert s.mfu == pytest.approx(0.5) and s.cpu_seconds is None
    assert B.side(2.0, 100, 1000, None, None).mfu is None
    assert B.side(2.0, 100, 1000, None, None, cpu_seconds=1.5).cpu_seconds == 1.5


def _result(**kw) -> B.BenchResult:
    base = {
        "size": "tiny",
        "model": "tiny",
        "device": "cpu",
        "device_name": "Some CPU",
        "precision": "fp32",
        "threads": 1,
        "batch_size": 32,
        "eval_batch_size": 512,
        "steps": 200,
        "repeats": 1,
        "locales": ("en-US", "de-DE"),
        "tokenizer": "xlmr",
        "vocab_size": 250_002,
        "layers": 2,
        "hidden": 64,
        "params": 16_100_000,
        "nonembedding_params": 70_000,
        "train_examples": 6400,
        "train_tokens": 64_000,
        "eval_examples": 600,
        "eval_tokens": 6000,
        "memory": "peak process RSS",
        "train_ours": B.side(10.0, 6400, 64_000, 900.0, 800.0),
        "train_trainer": B.side(20.0, 6400, 64_000, 1000.0, 800.0),
        "eval_ours": B.side(0.5, 600, 6000, 850.0, 800.0),
        "eval_trainer": B.side(1.0, 600, 6000, 870.0, 800.0),
        "f1_ours": {"en-US": 0.25, "de-DE": 0.5},
        "f1_trainer": {"en-US": 0.25, "de-DE": 0.5},
        "eval_words": 3000,
        "differing_words": 0,
        "train_step_fast": None,
        "torch_version": "2.x",
        "transformers_version": "5.x",
        "when": "2026-12-04T10:00:00+00:00",
        "host": "vm",
    }
    return B.BenchResult(**{**base, **kw})


def test_ratios_targets_and_as_dict():
    r = _result()
    assert r.train_ratio == 2.0 and r.eval_ratio == 2.0 and r.f1_difference == 0
    d = r.as_dict()
    json.dumps(d)  # JSON-able as it is
    assert d["train_ratio"] == 2.0 and d["targets"] == {"train": 1.5, "eval": 1.5}
    assert d["meets_targets"] == {"train": True, "eval": True}
    assert d["train_ours"]["utt_per_s"] == 640 and d["locales"] == ["en-US", "de-DE"]
    gpu = _result(device="cuda", device_name="NVIDIA H100 80GB HBM3")
    assert gpu.targets == {"train": 3.0, "eval": 10.0}
    assert gpu.as_dict()["meets_targets"] == {"train": False, "eval": False}
    assert _result(f1_trainer={"en-US": 0.25, "de-DE": 0.4}).f1_difference == pytest.approx(0.1)
    assert d["train_cpu_ratio"] is None  # no CPU times measured
    cpu = _result(
        train_ours=B.side(10.0, 6400, 64_000, None, None, cpu_seconds=8.0),
        train_trainer=B.side(20.0, 6400, 64_000, None, None, cpu_seconds=20.0),
        eval_ours=B.side(0.5, 600, 6000, None, None, cpu_seconds=0.5),
        eval_trainer=B.side(1.0, 600, 6000, None, None, cpu_seconds=0.75),
    )
    assert cpu.train_cpu_ratio == 2.5 and cpu.eval_cpu_ratio == 1.5
    assert "| 2.00x | 2.50x / 1.50x | - / - |" in B.markdown_row(cpu)
    assert "on CPU time 2.50x" in B.format_bench(cpu)


def test_markdown_row_and_text():
    r = _result()
    assert B.markdown_row(r) == (
        "| 2026-12-04 | tiny | cpu | fp32 | 1 | 200 x 32 (512) | 640.0 | 320.0 | 2.00x | 1,200.0"
        " | 600.0 | 2.00x | - / - | 900 / 1,000 | - / - |"
    )
    assert B.MARKDOWN_HEADER.count("|") == B.markdown_row(r).count("|")
    text = B.format_bench(r)
    assert "train ratio ours/Trainer: 2.00x (meets the 1.5x target)" in text
    assert "eval ratio ours/Trainer: 2.00x" in text
    assert "ours 0.3750, Trainer 0.3750" in text and "0 of 3,000 word predictions" in text
    assert B.MARKDOWN_HEADER in text and B.markdown_row(r) in text
    gpu = _result(
        device="cuda",
        device_name="NVIDIA H100 80GB HBM3",
        precision="bf16",
        train_ours=dataclasses.replace(_result().train_ours, mfu=0.123),
        eval_ours=dataclasses.replace(_result().eval_ours, mfu=0.0456),
    )
    row = B.markdown_row(gpu)
    assert "| cuda (NVIDIA H100 80GB HBM3) | bf16 |" in row and row.endswith("| 12.3% / 4.6% |")
    assert "peak GPU MiB" in B.format_bench(gpu)


def test_the_output_file_is_a_throughput_file_plan_estimate_reads(tmp_path):
    r = _result()
    out = B.write_bench(tmp_path / "bench.json", r)
    (rec,) = read_throughput(out)
    assert (rec.model, rec.source, rec.device, rec.precision) == ("tiny", "bench", "cpu", "fp32")
    assert (rec.train_utt_per_s, rec.eval_utt_per_s, rec.tokens_per_s) == (640, 1200, 6400)
    assert json.loads(out.read_text())["bench"]["train_ratio"] == 2.0
    sets = ["--set", "data.languages=[en-US]", "--set", "methods=[multi]"]
    p = CliRunner().invoke(cli, ["plan", "demo", *sets, "--estimate", "--throughput", str(out)])
    assert p.exit_code == 0, p.output
    assert f"--throughput {out}" in p.output and "bench on cpu" in p.output
    base = B.write_bench(tmp_path / "base.json", _result(size="base", model="xlm-roberta-base"))
    assert read_throughput(base)[0].model == "xlm-roberta-base"


def test_peak_rss_sees_an_allocation():
    import time

    with B.PeakRSS(interval=0.002) as rss:
        block = b"x" * (64 * 2**20)
        time.sleep(0.05)
    del block
    assert rss.start is not None and rss.peak is not None
    assert rss.peak - rss.start >= 48


@pytest.mark.slow  # ~5 s of its own; ~25 s in a fresh process (torch, transformers, Trainer)
def test_tiny_end_to_end(xlmr_tokenizer_dir, tmp_path):
    """A few steps of both sides: the fields, the F1s agree on the same weights, the file."""
    import inspect

    from hpc_forget.run.training import train_step

    r = B.bench(
        tokenizer=str(xlmr_tokenizer_dir), steps=3, batch_size=8, eval_batch_size=256, threads=1
    )
    assert (r.size, r.model, r.device, r.precision, r.threads) == ("tiny", "tiny", "cpu", "fp32", 1)
    assert r.train_examples == 24 and r.vocab_size == 250_002 and r.layers == 2
    assert r.locales == B.BENCH_LOCALES and r.eval_examples == 1200
    assert r.train_tokens > r.train_examples and r.eval_tokens > r.eval_examples
    assert 0 < r.nonembedding_params < r.params
    for s in (r.train_ours, r.train_trainer, r.eval_ours, r.eval_trainer):
        assert s.seconds > 0 and s.utt_per_s > 0 and s.tokens_per_s > s.utt_per_s
        assert s.peak_mem_mib is not None and s.peak_mem_mib >= s.start_mem_mib
        assert s.mfu is None and s.cpu_seconds is not None and s.cpu_seconds > 0  # CPU
    assert set(r.f1_ours) == set(B.BENCH_LOCALES) and r.f1_difference <= B.F1_TOLERANCE
    assert r.eval_words > 0 and r.differing_words == 0
    fast = inspect.signature(train_step).parameters.get("fast")
    assert r.train_step_fast == (None if fast is None else fast.default)
    (rec,) = read_throughput(B.write_bench(tmp_path / "b.json", r))
    assert rec.train_utt_per_s == pytest.approx(r.train_ours.utt_per_s)


def _main_error(capsys, *args) -> str:
    from hpc_forget.cli import main

    with pytest.raises(SystemExit) as exc:
        main(list(args))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_cli_cuda_without_a_gpu_is_one_line(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    err = _main_error(capsys, "bench", "--device", "cuda")
    assert err.startswith("error: bench: --device cuda") and "--device cpu" in err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--size", "huge"), "'--size'"),
        (("--device", "tpu"), "'--device'"),
        (("--steps", "0"), "'--steps'"),
        (("--precision", "fp8"), "'--precision'"),
    ],
)
def test_cli_bad_options_are_one_line(capsys, args, says):
    err = _main_error(capsys, "bench", *args)
    assert says in err and "see hpc-forget bench --help" in err


def test_cli_a_tokenizer_that_cannot_load_names_the_option(capsys, tmp_path):
    err = _main_error(capsys, "bench", "--tokenizer", str(tmp_path / "none"), "--steps", "1")
    assert "cannot load the tokenizer" in err and "--tokenizer" in err


def test_bench_checks_its_arguments():
    with pytest.raises(B.BenchError, match="--size"):
        B.bench(size="huge")
    with pytest.raises(B.BenchError, match="--steps"):
        B.bench(steps=0)
