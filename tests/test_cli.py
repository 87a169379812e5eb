"""The command line: thin commands over plain functions, one-line errors, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

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


def test_data_inspect_samples_json():
    r = run("data", "inspect", "samples", "--json")
    report = json.loads(r.output)
    assert r.exit_code == 0 and report


def _main(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "hpc_forget.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("run", "nope.yaml"), "nope.yaml: config file not found"),
        (
            ("plan", "demo", "--set", "train.batch_size=0"),
            "train.batch_size: must be an integer >= 1",
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
