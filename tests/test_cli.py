"""The command line: thin commands over plain functions, one-line errors, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpc_forget.cli import cli


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_config_show_prints_a_loadable_config(tmp_path):
    r = run("config", "show", "demo")
    assert r.exit_code == 0 and "name: demo" in r.output
    p = tmp_path / "mine.yaml"
    p.write_text(r.output)
    assert run("config", "check", str(p)).exit_code == 0


def test_plan_json_lists_tasks():
    r = run("plan", "demo", "--json")
    tasks = json.loads(r.output)
    assert len(tasks) == 14
    assert {t["kind"] for t in tasks} == {"joint", "per-language", "sequential"}


def test_params_prints_table_1():
    r = run("params")
    assert r.exit_code == 0
    for figure in ("278.04", "5.36", "10.72", "42.86", "14,458.27", "557.19", "2,228.75"):
        assert figure in r.output


def test_params_lists_every_preset():
    from hpc_forget.models.params import PRESETS

    r = run("params", "--presets")
    assert r.exit_code == 0
    lines = {line.split()[0]: line.split() for line in r.output.splitlines() if line.strip()}
    for preset, hub in PRESETS.items():
        assert lines[preset][1] == hub
    assert lines["xlm-roberta-large"][-4:] == ["559.89", "14.22", "28.44", "113.77"]
    assert lines["multilingual-e5-small"][-4:] == ["117.65", "2.68", "5.36", "21.43"]
    sizes = {s["preset"]: s for s in json.loads(run("params", "--presets", "--json").output)}
    assert sizes["multilingual-e5-large-instruct"]["full"] == 559_890_432
    assert sizes["multilingual-e5-base"]["lora"]["32"] == 5_357_568
    # each preset's own table; --help names them all
    large = run("params", "--model", "multilingual-e5-large-instruct").output
    assert "MULTI              -       1          -       559.89     558.95" in large
    help_text = " ".join(run("params", "--help").output.split())
    assert all(preset in help_text for preset in PRESETS)


def test_data_inspect_samples_json():
    r = run("data", "inspect", "samples", "--json")
    report = json.loads(r.output)
    assert r.exit_code == 0 and report


ROOT = Path(__file__).resolve().parents[1]
# The package of this checkout, whatever the working directory (an editable install elsewhere
# would otherwise win when a subprocess starts in tmp_path).
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _main(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "hpc_forget.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=ENV,
        timeout=120,
    )


def _one_error_line(p):
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("run", "nope.yaml"), "nope.yaml: config file not found"),
        (
            ("plan", "demo", "--set", "train.batch_size=0"),
            "error: --set train.batch_size=0: must be an integer >= 1, got 0",
        ),
        (("data", "inspect", "/no/such/folder"), "/no/such/folder"),
        (("config", "show", "demoo"), "no built-in config named 'demoo'"),
    ],
)
def test_user_errors_are_one_line_with_exit_2(args, needle, tmp_path):
    p = _main(*args, cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], p.stderr


def test_submit_dry_run_prints_scripts_without_slurm(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin/nonexistent")  # no sbatch reachable
    r = run("submit", "demo", "--dry-run", "--container", "none", "--slurm", "time=00:30:00")
    assert r.exit_code == 0, r.output
    assert "#SBATCH --array=0-3" in r.output and "#SBATCH --time=30" in r.output
    assert "-m hpc_forget.worker" in r.output
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_submit_bad_profile_value_is_one_line(tmp_path):
    p = _main("submit", "demo", "--dry-run", "--slurm", "time=soon", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.startswith("error: ") and "time" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_the_subprocess_runs_this_checkout(tmp_path):
    p = subprocess.run(
        [sys.executable, "-c", "import hpc_forget; print(hpc_forget.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=ENV,
    )
    assert Path(p.stdout.strip()).parent == ROOT / "hpc_forget"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("run", "demo", "--set", "x"),
            "error: --set 'x': use KEY=VALUE, e.g. train.batch_size=64 (see hpc-forget run --help)",
        ),
        (("plan",), "error: Missing argument 'CONFIG' (see hpc-forget plan --help)"),
        (
            ("plan", "demo", "--bogus"),
            "error: No such option '--bogus' (see hpc-forget plan --help)",
        ),
        (("frobnicate",), "error: No such command 'frobnicate' (see hpc-forget --help)"),
        (("params", "--languages", "x"), "error: Invalid value for '--languages': 'x' is not"),
        (("params", "--languages", "0"), "error: Invalid value for '--languages': 0 is not"),
        (("prefetch", "demo", "--source", "x"), "error: --source 'x': use KEY=VALUE"),
        (
            ("config", "check", "demo", "--set", "=5"),
            "error: --set '=5': the key before '=' is empty",
        ),
        (("config", "check", "demo", "--set", "a..b=1"), "error: --set a..b=1: empty key name"),
        (
            ("config", "check", "demo", "--set", "train.batch_size.x=5"),
            "error: --set train.batch_size.x=5: train.batch_size is 16, not a section",
        ),
        (
            ("plan", "demo", "--set", "name=[oops"),
            "error: --set name=[oops: not a valid YAML value (expected ',' or ']'",
        ),
        (
            ("config", "check", "demo", "--set", "train.lr_full=.nan"),
            "error: --set train.lr_full=.nan: must be a finite number, got .nan",
        ),
        (("run", "a\nb.yaml"), "error: a\\nb.yaml: config file not found"),
    ],
)
def test_usage_and_set_errors_are_one_line_exit_2(args, expected, tmp_path):
    line = _one_error_line(_main(*args, cwd=tmp_path))
    assert line.startswith(expected), line


def test_bare_group_prints_its_help(tmp_path):
    p = _main("config", cwd=tmp_path)
    assert p.returncode == 0 and "Commands:" in p.stdout and "check" in p.stdout


def test_version():
    p = _main("--version")
    assert p.returncode == 0 and p.stdout.startswith("hpc-forget, version ")


def test_cache_option_is_named_in_errors(tmp_path):
    line = _one_error_line(_main("submit", "demo", "--dry-run", "--cache", "a\x1bb", cwd=tmp_path))
    assert line.startswith("error: --cache a\\x1bb: must not contain control characters"), line


HEAVY = ("torch", "transformers", "peft", "accelerate", "datasets", "h5py")
LIGHT_COMMANDS = [
    ["--help"],
    ["--version"],
    ["config", "show", "demo"],
    ["config", "check", "demo"],
    ["config", "check", "paper", "--set", "train.batch_size=16"],
    ["plan", "demo"],
    ["plan", "paper", "--json"],
    ["params"],
    ["params", "--model", "multilingual-e5-base", "--languages", "3", "--json"],
    ["params", "--model", "multilingual-e5-small"],
    ["params", "--presets"],
    ["plan", "paper", "--estimate", "--profile", "example-gpu", "--throughput", "tp.json"],
]


def test_commands_that_do_not_train_import_no_torch(tmp_path):
    """--help of every command, config, plan and params: no torch, transformers or h5py."""
    from hpc_forget.cli import cli

    helps = [["--help"]]
    for name, cmd in cli.commands.items():
        helps.append([name, "--help"])
        for sub in getattr(cmd, "commands", {}):
            helps.append([name, sub, "--help"])
    script = (
        "import contextlib, io, sys\n"
        "from hpc_forget.cli import main\n"
        f"for argv in {LIGHT_COMMANDS + helps!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit as exc:\n"
        "            assert not exc.code, (argv, exc.code)\n"
        f"    heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "    assert not heavy, (argv, heavy)\n"
        "print('ok')\n"
    )
    from hpc_forget.run.throughput import Throughput, write_throughput

    rate = {"train_utt_per_s": 1e3, "eval_utt_per_s": 1e4, "tokens_per_s": 1e4}
    write_throughput(
        tmp_path / "tp.json",
        [
            Throughput(m, "cuda", "bf16", 32, 512, **rate, when="", host="", package_version="")
            for m in ("xlm-roberta-base", "multilingual-e5-large-instruct")
        ],
    )
    p = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=ENV
    )
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr[-2000:]


def test_an_unhandled_os_error_is_one_line_naming_the_path(monkeypatch, capsys):
    """The last safety net: a filesystem error no stage turned into its own message."""
    import hpc_forget.study.config as C
    from hpc_forget.cli import main

    def boom(name):
        raise PermissionError(13, "Permission denied", "/some/where/demo.yaml")

    monkeypatch.setattr(C, "builtin_config_text", boom)
    with pytest.raises(SystemExit) as e:
        main(["config", "show", "demo"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: /some/where/demo.yaml: Permission denied — check the path")
