"""The `hpc-forget` command line. Thin: each command parses, then calls one plain function."""

from __future__ import annotations

import functools
import json
import logging
import sys
from typing import Any

import click

from hpc_forget import __version__
from hpc_forget.analysis import options as analysis_options
from hpc_forget.errors import UserError, one_line

# Commands import what they need inside their function: `--help`, `config`, `plan` and
# `params` must not pay for torch, transformers or h5py (tests/test_cli.py checks this).

PROG = "hpc-forget"


def _command_path() -> str:
    ctx = click.get_current_context(silent=True)
    return ctx.command_path if ctx is not None else PROG


def _overrides(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``--set KEY=VALUE`` options as ``{dotted key: value}``; errors name the option."""
    if not pairs:
        return {}
    from hpc_forget.study.config import parse_sets

    return parse_sets(pairs, command=_command_path())


def _advise(store: str, languages: tuple[str, ...]) -> tuple[str, ...]:
    """Resolves a config's ``orders: [{advised: STORE}]`` (study.config.Advise); the analysis
    is imported only when a config has one."""
    from hpc_forget.analysis.advice import advised_order

    return advised_order(store, languages)


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is logged (not the stream of the
    moment the CLI started), so a command run in-process, as tests do, never logs to a
    closed stream."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _setup_logging(verbose: bool) -> None:
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    log = logging.getLogger("hpc_forget")
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


set_option = click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key, e.g. train.batch_size=64.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hpc-forget")
@click.option("-v", "--verbose", is_flag=True, help="More log output.")
def cli(verbose: bool) -> None:
    """Measure catastrophic forgetting in multilingual language models, from laptop to Slurm."""
    _setup_logging(verbose)


# ---------------------------------------------------------------------------- config / plan / run


@cli.group("config")
def config_group() -> None:
    """Show and check experiment configs."""


@config_group.command("show")
@click.argument("name")
def config_show(name: str) -> None:
    """Print a built-in config (demo, paper) so you can copy and edit it."""
    from hpc_forget.study.config import builtin_config_text

    click.echo(builtin_config_text(name), nl=False)


@config_group.command("check")
@click.argument("config")
@set_option
def config_check(config: str, sets: tuple[str, ...]) -> None:
    """Validate CONFIG and print it resolved, defaults filled in."""
    from hpc_forget.study.config import config_to_dict, dump_yaml, load_config

    cfg = load_config(config, overrides=_overrides(sets), advise=_advise)
    click.echo(dump_yaml(config_to_dict(cfg)), nl=False)


slurm_option_plan = click.option(
    "--slurm",
    "slurm_sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="--estimate: override a profile value, e.g. time=04:00:00.",
)


@cli.command("plan")
@click.argument("config")
@click.option("--json", "as_json", is_flag=True, help="Print the tasks (or the estimate) as JSON.")
@click.option(
    "--estimate", is_flag=True, help="GPU-hours, wall time and requeues of every task and array."
)
@click.option("--profile", default=None, help="--estimate: the cluster profile (name or YAML).")
@slurm_option_plan
@click.option(
    "--throughput",
    "throughput",
    multiple=True,
    metavar="FILE",
    help="--estimate: measured throughput (from --calibrate or bench) instead of calibrating.",
)
@click.option(
    "--calibrate",
    "calibrate_to",
    default=None,
    metavar="FILE",
    help="--estimate: calibrate on this machine and save the throughput to FILE.",
)
@click.option(
    "--tokenizer", default=None, help="--estimate: the tokenizer folder calibration uses."
)
@click.option("--store", default=None, help="--estimate: expected epochs from this store's runs.")
@set_option
def plan_cmd(
    config: str,
    as_json: bool,
    estimate: bool,
    profile: str | None,
    slurm_sets: tuple[str, ...],
    throughput: tuple[str, ...],
    calibrate_to: str | None,
    tokenizer: str | None,
    store: str | None,
    sets: tuple[str, ...],
) -> None:
    """Expand CONFIG into tasks and print them; with --estimate, what they cost (docs/estimate.md)."""
    from hpc_forget.study.config import load_config
    from hpc_forget.study.planning import format_plan, plan

    given = {
        "--profile": profile,
        "--slurm": slurm_sets,
        "--throughput": throughput,
        "--calibrate": calibrate_to,
        "--tokenizer": tokenizer,
        "--store": store,
    }
    if not estimate and any(given.values()):
        name = next(k for k, v in given.items() if v)
        raise click.UsageError(f"{name} needs --estimate")
    cfg = load_config(config, overrides=_overrides(sets), advise=_advise)
    tasks = plan(cfg)
    if estimate:
        from hpc_forget.cluster.estimate import estimate_config, format_estimate
        from hpc_forget.cluster.profiles import load_profile

        est = estimate_config(
            cfg,
            tasks,
            load_profile(profile, slurm_sets),
            throughput=throughput,
            calibrate_to=calibrate_to,
            tokenizer=tokenizer,
            store=store,
        )
        click.echo(json.dumps(est.as_json(), indent=2) if as_json else format_estimate(est))
        return
    if as_json:
        _echo_json([dict(t.to_dict(), task_id=t.task_id, run_id=t.run_id) for t in tasks])
    else:
        click.echo(format_plan(tasks))


@cli.command("run")
@click.argument("config")
@set_option
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def run_cmd(config: str, sets: tuple[str, ...], no_progress: bool) -> None:
    """Run CONFIG (a file or a built-in name such as `demo`) on this machine, without Slurm.

    Steps already in the store are skipped, so running again resumes.
    """
    from hpc_forget.analysis.summary import run_message
    from hpc_forget.run.engine import run_study

    study = run_study(config, overrides=_overrides(sets), progress=not no_progress, advise=_advise)
    click.echo(run_message(study))


# ---------------------------------------------------------------------------- data / params


@cli.group("data")
def data_group() -> None:
    """Inspect MASSIVE data."""


@data_group.command("inspect")
@click.argument("source")
@click.option("--locale", "locales", multiple=True, help="Only these locales (repeatable).")
@click.option("--json", "as_json", is_flag=True)
def data_inspect(source: str, locales: tuple[str, ...], as_json: bool) -> None:
    """Row counts, slot types and invalid rows per locale and split of SOURCE."""
    from hpc_forget.data.inspection import format_inspect, inspect_data

    report = inspect_data(source, list(locales) or None)
    click.echo(json.dumps(report, indent=2) if as_json else format_inspect(report))


@cli.command("params")
@click.option(
    "--model", default="xlm-roberta-base", show_default=True, help="Preset, hub id or path."
)
@click.option(
    "--languages",
    default=52,
    show_default=True,
    type=click.IntRange(min=1),
    help="Languages (MONO / NON-SHARED).",
)
@click.option(
    "--presets", "list_presets", is_flag=True, help="Every preset: hub id, shape and size."
)
@click.option("--json", "as_json", is_flag=True)
def params_cmd(model: str, languages: int, list_presets: bool, as_json: bool) -> None:
    """The paper's Table 1 Params column, beside what this implementation trains.

    Presets: xlm-roberta-base, xlm-roberta-large, multilingual-e5-small, multilingual-e5-base,
    multilingual-e5-large, multilingual-e5-large-instruct (--presets lists their shapes).
    """
    import dataclasses

    from hpc_forget.models.counts import params_for
    from hpc_forget.models.params import format_params, format_presets, preset_sizes

    if list_presets:
        sizes = preset_sizes()
        if as_json:
            _echo_json([dataclasses.asdict(s) for s in sizes])
        else:
            click.echo(format_presets(sizes))
        return
    rows = params_for(model, n_languages=languages)
    if as_json:
        _echo_json([dataclasses.asdict(r) for r in rows])
    else:
        click.echo(format_params(rows))


@cli.command("bench")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option(
    "--size",
    type=click.Choice(["tiny", "base"]),
    default="tiny",
    show_default=True,
    help="tiny: 2 layers of 64; base: xlm-roberta-base shapes (random init).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--out", default=None, metavar="FILE", help="Write the result (a throughput file) to FILE."
)
@click.option(
    "--tokenizer",
    default=None,
    metavar="DIR|HUB-ID",
    help="The tokenizer (default: xlm-roberta-base from the hub cache).",
)
@click.option("--steps", default=200, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--eval-batch-size", default=512, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--threads",
    default=1,
    show_default=True,
    type=click.IntRange(min=0),
    help="torch CPU threads (0: torch's default).",
)
@click.option(
    "--repeats",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Timed repeats of each side (best kept).",
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "bf16", "fp16", "fp32"]),
    default="auto",
    show_default=True,
)
def bench_cmd(
    device: str,
    size: str,
    as_json: bool,
    out: str | None,
    tokenizer: str | None,
    steps: int,
    batch_size: int,
    eval_batch_size: int,
    threads: int,
    repeats: int,
    precision: str,
) -> None:
    """Our training and evaluation against Hugging Face Trainer, same data (docs/benchmarks.md)."""
    from hpc_forget.run.bench import bench, format_bench, write_bench

    result = bench(
        device,
        size,
        tokenizer=tokenizer,
        steps=steps,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        precision=precision,
        threads=threads,
        repeats=repeats,
    )
    if out is not None:
        write_bench(out, result)
    if as_json:
        _echo_json(result.as_dict())
    else:
        click.echo(format_bench(result))
        if out is not None:
            click.echo(f"wrote {out} (plan --estimate --throughput {out} reads it)")


# ---------------------------------------------------------------------------- store


@cli.group("store")
def store_group() -> None:
    """Consolidate and test the results store."""


@store_group.command("consolidate")
@click.argument("store")
@click.option("--out", default=None, help="Output file (default: STORE/consolidated.h5).")
def store_consolidate(store: str, out: str | None) -> None:
    """Merge every step file into one HDF5 file you can copy to a laptop."""
    from hpc_forget.store.store import Store

    s = Store(store)
    path = s.consolidate(out)
    for p in s.problems():
        click.echo(f"skipped: {p}", err=True)
    click.echo(str(path))


@store_group.command("selftest")
@click.argument("path")
@click.option("--writers", default=64, show_default=True, help="Concurrent writer processes.")
@click.option(
    "--kill-fraction", default=0.2, show_default=True, help="Fraction of writers SIGKILLed."
)
@click.option("--steps", default=20, show_default=True, help="Steps each writer writes.")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def store_selftest(
    path: str, writers: int, kill_fraction: float, steps: int, seed: int, as_json: bool
) -> None:
    """Hammer a store at PATH with concurrent, randomly killed writers and verify it."""
    from hpc_forget.store.selftest import format_selftest, selftest

    report = selftest(path, writers=writers, kill_fraction=kill_fraction, steps=steps, seed=seed)
    click.echo(json.dumps(report, indent=2) if as_json else format_selftest(report))
    if not report.get("ok", False):
        sys.exit(1)


@cli.command("analyze")
@click.argument("store")
@click.option("--out", required=True, help="Output folder.")
@analysis_options.click_options
@functools.partial(analysis_options.click_options, options=(analysis_options.WORKERS,))
def analyze_cmd(store: str, out: str, workers: int | None, **options: Any) -> None:
    """Reduce STORE into metrics.json, tables/, figures/ and report.html under --out."""
    from hpc_forget.analysis.entry import analysis_notes, analyze, done_message

    result = analyze(
        store, out, analysis_options.AnalysisOptions.from_args(options), workers=workers
    )
    for line in analysis_notes(result):
        click.echo(line, err=True)
    click.echo(done_message(out, result))


@cli.command("advise-order")
@click.argument("store")
@click.option(
    "--languages",
    "languages",
    multiple=True,
    metavar="LOCALES",
    help="The languages to order, comma-separated or repeated (default: the store's).",
)
@click.option("--method", default=None, help="Fit on this method's runs (default: vanilla).")
@click.option("--model", default=None, help="Fit on this model's runs (default: the most runs).")
@click.option("--rank", default=None, type=int, help="Fit on this LoRA rank's runs.")
@click.option("--strategy", default=None, help="Fit on this strategy's runs (default: none).")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable object.")
def advise_order_cmd(
    store: str,
    languages: tuple[str, ...],
    method: str | None,
    model: str | None,
    rank: int | None,
    strategy: str | None,
    as_json: bool,
) -> None:
    """Propose the order of languages that STORE's measurements predict forgets least.

    Fits a stated model of forgetting to the store's sequential runs, searches the order with
    the highest predicted final average F1 and compares it with the store's own orders
    (docs/advice.md). Use the result in a config as `orders: [{advised: STORE}]`.
    """
    from hpc_forget.analysis.advice import advise, format_advice

    langs = [x for v in languages for x in v.split(",")] if languages else None
    result = advise(store, langs, method=method, model=model, rank=rank, strategy=strategy)
    click.echo(json.dumps(result.as_json(), indent=2) if as_json else format_advice(result))


# ---------------------------------------------------------------------------- cluster


def _pairs(values: tuple[str, ...], option: str, example: str) -> dict[str, str]:
    from hpc_forget.errors import split_pair

    pairs = (split_pair(v, option, click.UsageError, example) for v in values)
    return {k: val.strip() for k, val in pairs}


def _load_for_cluster(config: str, sets: tuple[str, ...], cache: str | None) -> Any:
    """The config, with --cache as cache_dir (absolute) so jobs look where prefetch wrote."""
    import os

    from hpc_forget.study.config import load_config

    overrides = _overrides(sets)
    labels = {}
    if cache:
        overrides["cache_dir"] = os.path.abspath(cache)
        labels["cache_dir"] = f"--cache {cache}"
    return load_config(config, overrides=overrides, labels=labels, advise=_advise)


slurm_option = click.option(
    "--slurm",
    "slurm_sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a profile value, e.g. time=04:00:00 or partition=gpu.",
)


@cli.command("prefetch")
@click.argument("config")
@click.option(
    "--cache", default=None, help="Shared cache folder (default: the config's cache_dir)."
)
@click.option(
    "--source",
    "sources",
    multiple=True,
    metavar="ITEM=SRC",
    help="Where an item comes from (massive=URL, MODEL=folder).",
)
@click.option(
    "--revision", "revisions", multiple=True, metavar="MODEL=SHA", help="Pin a model revision."
)
@click.option("--update", is_flag=True, help="Fetch again even when the cache holds the item.")
@set_option
def prefetch_cmd(
    config: str,
    cache: str | None,
    sources: tuple[str, ...],
    revisions: tuple[str, ...],
    update: bool,
    sets: tuple[str, ...],
) -> None:
    """On a login node: download, verify and record the models and data CONFIG needs."""
    from hpc_forget.cluster.prefetch import prefetch

    cfg = _load_for_cluster(config, sets, cache)
    record = prefetch(
        cfg,
        cfg.cache_dir,
        sources=_pairs(sources, "--source", "massive=URL or MODEL=folder"),
        revisions=_pairs(revisions, "--revision", "MODEL=SHA"),
        update=update,
    )
    click.echo(record.summary())


@cli.command("submit")
@click.argument("config")
@click.option(
    "--profile", default=None, help="Cluster profile: a name in slurm/profiles/ or a YAML path."
)
@slurm_option
@click.option(
    "--container", default="none", show_default=True, help="'none' or an Apptainer image (.sif)."
)
@click.option(
    "--cache", default=None, help="The cache prefetch wrote to (default: the config's cache_dir)."
)
@click.option("--run-folder", default=None, help="Where manifests, markers and logs go.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the sbatch scripts and container commands; submit nothing.",
)
@click.option(
    "--pack",
    type=click.IntRange(min=1),
    default=None,
    help="Run up to N independent tasks per array element, on one loaded model (overrides"
    " the profile's tasks_per_job; chains are never packed).",
)
@set_option
def submit_cmd(
    config: str,
    profile: str | None,
    slurm_sets: tuple[str, ...],
    container: str,
    cache: str | None,
    run_folder: str | None,
    dry_run: bool,
    pack: int | None,
    sets: tuple[str, ...],
) -> None:
    """Submit CONFIG's plan to Slurm as job arrays and return at once."""
    from hpc_forget.cluster.profiles import load_profile
    from hpc_forget.cluster.submit import submit

    cfg = _load_for_cluster(config, sets, cache)
    prof = load_profile(profile, slurm_sets)
    result = submit(
        cfg, prof, container=container, dry_run=dry_run, run_folder=run_folder, pack=pack
    )
    click.echo(result.summary())


@cli.command("status")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True)
@click.option("--sacct", is_flag=True, help="Also ask Slurm's accounting (one batched sacct call).")
def status_cmd(run: str, as_json: bool, sacct: bool) -> None:
    """State of every task of RUN (a run folder): pending, running, done or failed."""
    from hpc_forget.cluster.status import status

    st = status(run, sacct=sacct)
    click.echo(json.dumps(st.as_json(), indent=2) if as_json else st.format())


@cli.command("resubmit")
@click.argument("run")
@click.option("--profile", default=None, help="Another profile (default: the submission's own).")
@slurm_option
@click.option("--container", default="same", show_default=True, help="'same', 'none' or an image.")
@click.option("--dry-run", is_flag=True)
def resubmit_cmd(
    run: str, profile: str | None, slurm_sets: tuple[str, ...], container: str, dry_run: bool
) -> None:
    """Submit only the failed or missing tasks and steps of RUN."""
    from hpc_forget.cluster.profiles import load_profile
    from hpc_forget.cluster.status import resubmit

    prof = load_profile(profile, ()) if profile else None
    result = resubmit(run, profile=prof, overrides=slurm_sets, container=container, dry_run=dry_run)
    click.echo(result.summary())


@cli.command("cancel")
@click.argument("run")
def cancel_cmd(run: str) -> None:
    """Cancel every job of RUN (resubmit runs what is left)."""
    from hpc_forget.cluster.status import cancel

    ids = cancel(run)
    click.echo(f"cancelled {len(ids)} job(s): {' '.join(ids)}" if ids else "nothing to cancel")


def main(argv: list[str] | None = None) -> None:
    """The ``hpc-forget`` entry point: any bad input is one line on stderr and exit 2."""
    try:
        rc = cli.main(args=argv, prog_name=PROG, standalone_mode=False)
        if isinstance(rc, int) and rc:  # ctx.exit(rc) of a command
            sys.exit(rc)
    except click.exceptions.NoArgsIsHelpError as exc:  # `hpc-forget config`: show its help
        click.echo(exc.ctx.get_help() if exc.ctx else "")
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else PROG
        message = one_line(exc.format_message()).rstrip(".")
        click.echo(f"error: {message} (see {where} --help)", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"error: {one_line(exc.format_message())}", err=True)
        sys.exit(exc.exit_code)
    except UserError as exc:
        click.echo(f"error: {one_line(str(exc))}", err=True)
        sys.exit(2)
    except BrokenPipeError:  # `hpc-forget config show paper | head`: not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except OSError as exc:  # a filesystem problem no stage turned into its own message
        click.echo(f"error: {os_error_line(exc)}", err=True)
        sys.exit(2)


def os_error_line(exc: OSError) -> str:
    """One line for an OSError that reached the command line: the path, what went wrong and
    what to do. Every write is atomic (files.atomic_write), so nothing stored is damaged."""
    where = exc.filename if exc.filename is not None else "a file"
    reason = exc.strerror or one_line(str(exc))
    return one_line(
        f"{where}: {reason} — check the path, its permissions and free space, then re-run"
        " (results already stored are intact)"
    )


if __name__ == "__main__":
    main()
