"""The bad-input probe (issue #8): bad inputs and faults, each handled in one line, nothing lost.

Every case of ``CASES`` sets up a small world (a config, a pre-built results store, a real
MASSIVE data folder, a cluster profile) in its own temporary folder, breaks one thing, and runs
the real command line (``hpc_forget.cli.main`` in-process, argv patched) or, for faults that
need a model or a full disk, the library function the command would call. A case is *handled*
when:

- ``error`` cases: exit code 2; stderr is exactly one non-empty line starting with ``error:``,
  without ``Traceback``, naming the offending file, option or key (``names``); library cases
  raise a :class:`~hpc_forget.errors.UserError` whose message is one such line;
- ``warn`` cases (readers of a damaged store): exit code 0, every stderr line is one readable
  line and one names the damaged file, no traceback;
- ``ok`` cases (harmless leftovers): exit code 0 and nothing on stderr;
- ``fresh`` cases (stale results): a changed config plans new runs — no run id of the store
  (which holds the scores of the unchanged config) comes back;

and, in every case, *nothing is lost*: every file of the world (store, config, data, profile,
models) is byte-identical afterwards and no file appeared in it (a run file without scores, a
leftover temporary file, a half-written checkpoint).

Categories (issue #8): (1) stale results, (2) control characters and invalid profile values in
what reaches an sbatch script or command line, (3) bad inputs and faults, (5) wrong option
values. Each case is its own test, so a failure names the case; ``test_probe_summary`` (run
last) prints ``probe: N cases, M handled (...)`` and asserts M == N, running any case the
selection left out.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hpc_forget.errors import UserError

# --------------------------------------------------------------------------------------------
# the world every case starts from

STUDY = """\
name: probe
store: store
data:
  source: data
  languages: [en-US, de-DE]
  max_train: 20
  max_eval: 10
  missing_train: split-dev
models: [tiny]
methods: [multi, mono, vanilla]
orders: [1]
seeds: [0]
train:
  batch_size: 8
  max_epochs_full: 2
"""

PROFILE = """\
partition: debug
cpus_per_task: 1
mem: 2G
time: "0:30:00"
signal_lead_s: 30
nv: false
sbatch: []
setup: []
"""

# real rows per partition for the data folder (en-US: train/dev/test; de-DE: dev/test only)
ROWS = {"train": 40, "dev": 20, "test": 20}


def _real_rows(path: Path) -> bytes:
    want = dict(ROWS)
    out: list[str] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            part = json.loads(line)["partition"]
            if want.get(part, 0) > 0:
                want[part] -= 1
                out.append(line if line.endswith("\n") else line + "\n")
            if not any(want.values()):
                break
    return "".join(out).encode()


def _tree(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest)."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            if p.is_symlink() or not p.is_file():
                out[str(p.relative_to(root))] = "special"
                continue
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def template(tmp_path_factory, massive_dir: Path, tiny_model_dir: Path) -> Path:
    """The pristine world: study.yaml, profile.yaml, data/, model/ and a store holding every
    step of study.yaml's plan (written with Store.put_run / put_step, no training)."""
    from hpc_forget.data.labels import LABELS
    from hpc_forget.store.store import Store
    from hpc_forget.study.config import config_to_dict, load_config
    from hpc_forget.study.planning import plan

    root = tmp_path_factory.mktemp("probe-template")
    (root / "study.yaml").write_text(STUDY, encoding="utf-8")
    (root / "profile.yaml").write_text(PROFILE, encoding="utf-8")
    (root / "data").mkdir()
    for loc in ("en-US", "de-DE"):
        (root / "data" / f"{loc}.jsonl").write_bytes(_real_rows(massive_dir / f"{loc}.jsonl"))
    shutil.copytree(tiny_model_dir, root / "model")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        cfg = load_config("study.yaml")
        store = Store(cfg.store)
        for t in plan(cfg):
            store.put_run(
                t.run_id,
                key=t.key.as_dict(),
                kind=t.kind,
                languages=list(t.languages),
                steps=list(t.steps),
                labels=list(LABELS),
                config=config_to_dict(cfg),
            )
            for step in t.step_indices:
                langs = t.languages if t.kind != "per-language" else (t.languages[step],)
                store.put_step(
                    t.run_id,
                    step,
                    scores={loc: 0.5 + 0.01 * step for loc in langs},
                    dev_curve=[0.1, 0.2],
                    meta={"epochs_run": 2, "best_epoch": 1, "wall_time_s": 1.0},
                    provenance={"host": "probe"},
                )
    finally:
        os.chdir(cwd)
    return root


def stored_run_ids(world: Path) -> set[str]:
    return {p.stem for p in (world / "store" / "runs").glob("*.h5")}


# --------------------------------------------------------------------------------------------
# the cases


@dataclass(frozen=True)
class Case:
    id: str
    category: str  # "1 stale", "2 control", "3 bad input", "5 option"
    description: str
    argv: tuple[str, ...] = ()  # the CLI arguments (after `hpc-forget`), run in the world
    names: str = ""  # a substring the one-line message must contain
    setup: Callable[[Path], None] | None = None  # breaks one thing in the world
    call: Callable[[Path, Any], None] | None = None  # a library call instead of the CLI
    expect: str = "error"  # error | warn | ok | fresh | recovers (a call that repairs)
    repairs: str = ""  # with `recovers`: the only path prefix the call may rewrite


def _write(rel: str, text: str | bytes) -> Callable[[Path], None]:
    def setup(world: Path) -> None:
        p = world / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            p.write_bytes(text)
        else:
            p.write_text(text, encoding="utf-8")

    return setup


def _edit(rel: str, old: str, new: str) -> Callable[[Path], None]:
    def setup(world: Path) -> None:
        p = world / rel
        text = p.read_text(encoding="utf-8")
        assert old in text, (rel, old)
        p.write_text(text.replace(old, new, 1), encoding="utf-8")

    return setup


def _truncate(rel_glob: str, keep: float = 0.5) -> Callable[[Path], None]:
    def setup(world: Path) -> None:
        paths = sorted(world.glob(rel_glob))
        assert paths, rel_glob
        p = paths[0]
        data = p.read_bytes()
        p.write_bytes(data[: int(len(data) * keep)])

    return setup


def _first_step_file(world: Path) -> Path:
    return sorted((world / "store" / "steps").glob("*/*.h5"))[0]


def _damage_step(world: Path) -> None:
    p = _first_step_file(world)
    p.write_bytes(p.read_bytes()[:100])


def _garbage_step(world: Path) -> None:
    p = _first_step_file(world)
    p.write_bytes(b"not hdf5 at all\n" * 8)


def _damage_run_file(world: Path) -> None:
    p = sorted((world / "store" / "runs").glob("*.h5"))[0]
    p.write_bytes(p.read_bytes()[:200])


def _marker(**changes: Any) -> Callable[[Path], None]:
    def setup(world: Path) -> None:
        p = world / "store" / "STORE.json"
        d = json.loads(p.read_text())
        d.update(changes)
        p.write_text(json.dumps(d))

    return setup


def _leftover_tmp(world: Path) -> None:
    step = _first_step_file(world)
    (step.parent / f".{step.name}.12345.tmp").write_bytes(step.read_bytes()[:50])
    (world / "store" / "runs" / ".leftover.h5.999.tmp").write_bytes(b"\x89HDF")


def _broken_model(what: str) -> Callable[[Path], None]:
    def setup(world: Path) -> None:
        m = world / "model"
        if what == "weights":
            w = m / "model.safetensors"
            w.write_bytes(w.read_bytes()[: w.stat().st_size // 3])
        elif what == "empty-weights":
            (m / "model.safetensors").write_bytes(b"")
        elif what == "config":
            (m / "config.json").write_text('{"model_type": "xlm-roberta", ')
        elif what == "tokenizer":
            (m / "tokenizer.json").write_text('{"version": "1.0", "truncation"')

    return setup


def _tiny_cache(world: Path) -> None:
    """A tiny-model cache folder (as `resolve_model_spec("tiny")` leaves it) whose weights were
    cut short by a full disk; the probe then asks for the same tiny model again."""
    from hpc_forget.models.tiny import tiny_key

    texts, labels = _TINY_ARGS
    key = tiny_key(texts, labels, vocab_size=300, mlm_steps=0)
    dest = world / "cache" / f"tiny-{key}"
    shutil.copytree(world / "model", dest)
    w = dest / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])


_TINY_ARGS: tuple[list[str], list[str]] = (["wake me up at five am"], ["O"])


def _call_tiny_cache(world: Path, _mp: Any) -> None:
    from hpc_forget.models.hub import load_model
    from hpc_forget.models.tiny import resolve_model_spec

    texts, labels = _TINY_ARGS
    path = resolve_model_spec(
        "tiny",
        texts_fn=lambda: texts,
        cache_dir=world / "cache",
        labels=labels,
        vocab_size=300,
        mlm_steps=0,
    )
    load_model(path, labels)


def _call_load_model(world: Path, _mp: Any) -> None:
    from hpc_forget.data.labels import LABELS
    from hpc_forget.models.hub import load_model

    load_model(str(world / "model"), list(LABELS))


def _call_load_tokenizer(world: Path, _mp: Any) -> None:
    from hpc_forget.models.hub import load_tokenizer

    load_tokenizer(str(world / "model"))


def _probe_cfg(world: Path) -> Any:
    from hpc_forget.study.config import load_config

    return load_config(world / "study.yaml", overrides={"store": str(world / "store")})


def _vanilla_run_id(world: Path) -> str:
    from hpc_forget.study.planning import plan

    return next(t.run_id for t in plan(_probe_cfg(world)) if t.kind == "sequential")


def _save_first_checkpoint(world: Path) -> None:
    """A good checkpoint of step 0 of the vanilla chain (a small module stands in)."""
    import torch

    from hpc_forget.run.checkpoints import save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(torch.nn.Linear(4, 3), _probe_cfg(world), _vanilla_run_id(world), 0)


def _truncated_checkpoint(world: Path) -> None:
    _save_first_checkpoint(world)
    p = next((world / "store" / "checkpoints").glob("*/step-000000.pt"))
    p.write_bytes(p.read_bytes()[:300])


def _flipped_checkpoint(world: Path) -> None:
    """One bit flipped in the weights' bytes (torch.load would read other weights)."""
    import struct
    import zipfile

    _save_first_checkpoint(world)
    p = next((world / "store" / "checkpoints").glob("*/step-000000.pt"))
    with zipfile.ZipFile(p) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("/data/0"))
    data = bytearray(p.read_bytes())
    name_len, extra_len = struct.unpack(
        "<HH", data[info.header_offset + 26 : info.header_offset + 30]
    )
    data[info.header_offset + 30 + name_len + extra_len + info.file_size // 2] ^= 0x10
    p.write_bytes(bytes(data))


def _call_resume_checkpoint(world: Path, _mp: Any) -> None:
    import torch

    from hpc_forget.run.checkpoints import resume_from_checkpoint

    start = resume_from_checkpoint(
        torch.nn.Linear(4, 3), _probe_cfg(world), _vanilla_run_id(world), 1, n_steps=3
    )
    assert start == 0, start  # recompute from the first step


def _enospc(*_a: Any, **_k: Any) -> Any:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _call_checkpoint_enospc(world: Path, mp: Any) -> None:
    """torch.save writes part of the file, then the disk is full."""
    import torch

    from hpc_forget.run.checkpoints import save_checkpoint

    def partial_save(obj: Any, f: Any, *a: Any, **k: Any) -> None:
        if hasattr(f, "write"):
            f.write(b"PK\x03\x04 half a checkpoint")
        else:
            Path(f).write_bytes(b"PK\x03\x04 half a checkpoint")
        _enospc()

    mp.setattr(torch, "save", partial_save)
    save_checkpoint(torch.nn.Linear(4, 3), _probe_cfg(world), _vanilla_run_id(world), 1)


def _call_put_step_enospc(world: Path, mp: Any) -> None:
    """A new step of a new run while the disk is full (os.write fails)."""
    from hpc_forget.store.store import Store

    s = Store(world / "store")
    run_id = sorted(stored_run_ids(world))[0]
    rec = s.run(run_id)
    mp.setattr(os, "write", _enospc)
    s.put_step(
        run_id,
        len(rec.steps) - 1,
        scores={loc: 0.9 for loc in rec.languages},
        dev_curve=[0.3],
        meta={},
        provenance={},
    )


def _delete_last_step(world: Path) -> None:
    from hpc_forget.store.store import Store

    s = Store(world / "store")
    run_id = sorted(stored_run_ids(world))[0]
    rec = s.run(run_id)
    s.step_file(run_id, len(rec.steps) - 1).unlink()


def _call_put_run_enospc(world: Path, mp: Any) -> None:
    from hpc_forget.store.store import Store

    mp.setattr(os, "write", _enospc)
    Store(world / "store").put_run(
        "probe-new-run-00000000",
        key={"method": "multi"},
        kind="joint",
        languages=["en-US"],
        steps=["all"],
        labels=["O"],
        config={},
    )


def _call_put_run_other_config(world: Path, _mp: Any) -> None:
    """The store's run file for this run id was written with another config: never reuse it."""
    from hpc_forget.data.labels import LABELS
    from hpc_forget.store.store import Store
    from hpc_forget.study.config import config_from_dict, config_to_dict
    from hpc_forget.study.identity import run_settings
    from hpc_forget.study.planning import plan

    cfg = _probe_cfg(world)
    t = plan(cfg)[0]
    other = config_to_dict(cfg)
    other["train"]["lr_full"] = 0.123
    settings = run_settings(config_from_dict(other), t.key.method, t.key.rank)
    Store(world / "store").put_run(
        t.run_id,
        key=t.key.as_dict(),
        kind=t.kind,
        languages=list(t.languages),
        steps=list(t.steps),
        labels=list(LABELS),
        config=other,
        settings=settings,
    )


def _fresh(*sets: str) -> tuple[str, ...]:
    return ("plan", "study.yaml", "--json", *(x for s in sets for x in ("--set", s)))


def _submit(*extra: str) -> tuple[str, ...]:
    return ("submit", "study.yaml", "--profile", "profile.yaml", "--dry-run", *extra)


def _analyze(*extra: str) -> tuple[str, ...]:
    return ("analyze", "store", "--out", "{out}/report", "--bootstrap", "0", *extra)


NL = "\n"

CASES: list[Case] = [
    # ---------------------------------------------------------------- (1) stale results
    Case("stale-lr", "1 stale", "changed train.lr_full must plan new runs",
         _fresh("train.lr_full=0.001"), expect="fresh"),
    Case("stale-batch", "1 stale", "changed train.batch_size must plan new runs",
         _fresh("train.batch_size=4"), expect="fresh"),
    Case("stale-epochs", "1 stale", "changed train.max_epochs_full must plan new runs",
         _fresh("train.max_epochs_full=3"), expect="fresh"),
    Case("stale-max-train", "1 stale", "changed data.max_train must plan new runs",
         _fresh("data.max_train=10"), expect="fresh"),
    Case("stale-max-length", "1 stale", "changed train.max_length must plan new runs",
         _fresh("train.max_length=64"), expect="fresh"),
    Case("stale-source", "1 stale", "another data source must plan new runs",
         _fresh("data.source=samples"), expect="fresh"),
    Case("stale-put-run-config", "1 stale",
         "put_run of a stored run id with other settings (lr_full) is refused",
         names="different settings", call=_call_put_run_other_config),
    Case("stale-run-file-before-scores", "1 stale",
         "a run that fails before its first scores leaves no run file",
         ("run", "study.yaml", "--no-progress", "--set", "models=[model]",
          "--set", "train.lr_full=0.004"),
         names="model.safetensors", setup=_broken_model("weights")),
    Case("stale-run-file-no-train-data", "1 stale",
         "a language without train data fails before any run file is written",
         ("run", "study.yaml", "--no-progress", "--set", "data.missing_train=error",
          "--set", "train.lr_full=0.004"),
         names="de-DE"),
    # ---------------------------------------------- (2) control characters, profile values
    Case("ctl-run-folder-nl", "2 control", "newline in --run-folder",
         _submit("--run-folder", f"rf{NL}touch /tmp/pwned"), names="--run-folder"),
    Case("ctl-run-folder-cr", "2 control", "carriage return in --run-folder",
         _submit("--run-folder", "rf\rx"), names="--run-folder"),
    Case("ctl-store-nl", "2 control", "newline in the store path (--set store)",
         _submit("--set", 'store="st\\nore"'), names="store"),
    Case("ctl-store-file", "2 control", "newline in the store path (config file)",
         _submit(), names="store", setup=_edit("study.yaml", "store: store", 'store: "a\\nb"')),
    Case("ctl-cache-nl", "2 control", "newline in --cache",
         _submit("--cache", f"cache{NL}dir"), names="--cache"),
    Case("ctl-set-raw-nl", "2 control", "a raw newline in a --set value (YAML folds it)",
         ("run", "study.yaml", "--no-progress", "--set", f"store=st{NL}ore"), names="--set"),
    Case("ctl-set-raw-tab", "2 control", "a raw tab in a --set value",
         ("plan", "study.yaml", "--set", "name=a\tb"), names="--set"),
    Case("prefetch-cache-unwritable", "3 bad input", "prefetch into a cache that cannot exist",
         ("prefetch", "study.yaml", "--cache", "/proc/no-such/cache"), names="/proc/no-such"),
    Case("ctl-cache-dir-set", "2 control", "escape character in cache_dir",
         _submit("--set", 'cache_dir="ca\\x1bche"'), names="cache_dir"),
    Case("ctl-container-nl", "2 control", "newline in --container",
         _submit("--container", f"img{NL}.sif"), names="--container"),
    Case("ctl-model-nl", "2 control", "newline in a model name",
         _submit("--set", 'models=["tiny\\nx"]'), names="models"),
    Case("ctl-model-tab", "2 control", "tab in a model name",
         _submit("--set", 'models=["xlm-roberta-base\\tx"]'), names="models"),
    Case("ctl-language-nl", "2 control", "newline in a language",
         _submit("--set", 'data.languages=["en-US\\n", "de-DE"]'), names="data.languages"),
    Case("ctl-name-nl", "2 control", "newline in the study name (job names)",
         _submit("--set", 'name="probe\\n#SBATCH --x"'), names="name"),
    Case("ctl-slurm-partition", "2 control", "newline in --slurm partition",
         _submit("--slurm", f"partition=debug{NL}rm -rf ~"), names="partition"),
    Case("ctl-slurm-account", "2 control", "escape character in --slurm account",
         _submit("--slurm", "account=a\x1b[2Jb"), names="account"),
    Case("ctl-slurm-qos", "2 control", "newline in --slurm qos",
         _submit("--slurm", f"qos=normal{NL}#SBATCH --x"), names="qos"),
    Case("ctl-slurm-constraint", "2 control", "newline in --slurm constraint",
         _submit("--slurm", f"constraint=a100{NL}b"), names="constraint"),
    Case("ctl-slurm-setup", "2 control", "newline inside a --slurm setup line",
         _submit("--slurm", 'setup=["module load x\\nrm -rf ~"]'), names="setup"),
    Case("ctl-slurm-sbatch", "2 control", "newline inside a --slurm sbatch line",
         _submit("--slurm", 'sbatch=["--mail-type=FAIL\\nrm"]'), names="sbatch"),
    Case("ctl-slurm-python", "2 control", "newline in --slurm python",
         _submit("--slurm", f"python=python{NL}rm"), names="python"),
    Case("ctl-slurm-container-python", "2 control", "newline in --slurm container_python",
         _submit("--slurm", f"container_python=python{NL}rm"), names="container_python"),
    Case("ctl-profile-file", "2 control", "bell character in a profile file's partition",
         _submit(), names="partition",
         setup=_edit("profile.yaml", "partition: debug", 'partition: "de\\abug"')),
    Case("slurm-gres-xyz", "2 control", "--slurm gres=gpu:x:y:z", _submit("--slurm", "gres=gpu:x:y:z"),
         names="gres"),
    Case("slurm-gres-empty-count", "2 control", "--slurm gres=gpu:", _submit("--slurm", "gres=gpu:"),
         names="gres"),
    Case("slurm-time-word", "2 control", "--slurm time=soon", _submit("--slurm", "time=soon"),
         names="time"),
    Case("slurm-time-unit", "2 control", "--slurm time=2h", _submit("--slurm", "time=2h"),
         names="time"),
    Case("slurm-time-fields", "2 control", "--slurm time=1:2:3:4",
         _submit("--slurm", "time=1:2:3:4"), names="time"),
    Case("slurm-time-zero", "2 control", "--slurm time=0", _submit("--slurm", "time=0"),
         names="time"),
    Case("slurm-chain-time-neg", "2 control", "--slurm chain_time=-5",
         _submit("--slurm", "chain_time=-5"), names="chain_time"),
    Case("slurm-cpus-zero", "2 control", "--slurm cpus_per_task=0",
         _submit("--slurm", "cpus_per_task=0"), names="cpus_per_task"),
    Case("slurm-nv-maybe", "2 control", "--slurm nv=maybe", _submit("--slurm", "nv=maybe"),
         names="nv"),
    Case("slurm-unknown-key", "2 control", "--slurm colour=blue",
         _submit("--slurm", "colour=blue"), names="colour"),
    Case("slurm-no-equals", "2 control", "--slurm time (no value)", _submit("--slurm", "time"),
         names="--slurm"),
    Case("slurm-mem-bad", "2 control", "--slurm mem=lots", _submit("--slurm", "mem=lots"),
         names="mem"),
    Case("slurm-lead-too-long", "2 control", "--slurm signal_lead_s longer than the time",
         _submit("--slurm", "signal_lead_s=99999"), names="signal_lead_s"),
    # ------------------------------------------------------- (3) bad inputs and faults
    *[
        Case(f"nan-{key.replace('.', '-').replace('_', '-')}-{val.strip('.-')}", "3 bad input",
             f"{val} in {key}", ("config", "check", "study.yaml", "--set", f"{key}={val}"),
             names=key)
        for key, val in [
            ("train.lr_full", ".nan"),
            ("train.lr_lora", ".inf"),
            ("train.lr_head_lora", ".nan"),
            ("train.warmup_ratio", ".nan"),
            ("train.weight_decay", ".inf"),
            ("train.max_grad_norm", ".nan"),
            ("train.lora_dropout", ".nan"),
            ("data.train_fraction", ".nan"),
            ("data.dev_fraction_for_train", ".nan"),
        ]
    ],
    Case("nan-in-file", "3 bad input", "lr_full: .nan in the config file",
         ("config", "check", "study.yaml"), names="train.lr_full",
         setup=_edit("study.yaml", "  batch_size: 8", "  batch_size: 8\n  lr_full: .nan")),
    Case("set-bad-yaml", "3 bad input", "malformed YAML in --set",
         ("config", "check", "study.yaml", "--set", "train.batch_size=[1,"), names="--set"),
    Case("set-bad-yaml-brace", "3 bad input", "malformed YAML mapping in --set",
         ("config", "check", "study.yaml", "--set", "data={source: x"), names="--set"),
    Case("slurm-bad-yaml", "3 bad input", "malformed YAML list in --slurm",
         _submit("--slurm", "sbatch=[--exclusive"), names="--slurm"),
    Case("set-into-int", "3 bad input", "--set train.batch_size.x=5 (a key under a number)",
         ("config", "check", "study.yaml", "--set", "train.batch_size.x=5"),
         names="train.batch_size"),
    Case("set-empty-key", "3 bad input", "--set =5",
         ("config", "check", "study.yaml", "--set", "=5"), names="--set"),
    Case("set-empty-part", "3 bad input", "--set train..lr_full=1",
         ("config", "check", "study.yaml", "--set", "train..lr_full=1"), names="--set"),
    Case("set-no-equals", "3 bad input", "--set without =",
         ("config", "check", "study.yaml", "--set", "train.batch_size"), names="--set"),
    Case("set-attribution", "3 bad input", "a bad --set value is attributed to --set",
         ("config", "check", "study.yaml", "--set", "train.batch_size=0"),
         names="--set train.batch_size"),
    Case("set-unknown-key", "3 bad input", "--set of an unknown key is attributed to --set",
         ("config", "check", "study.yaml", "--set", "train.batchsize=8"),
         names="--set train.batchsize"),
    Case("dup-key-top", "3 bad input", "a key given twice in the config file",
         ("config", "check", "study.yaml"), names="name",
         setup=_edit("study.yaml", "name: probe", "name: probe\nname: other")),
    Case("dup-key-nested", "3 bad input", "a nested key given twice in the config file",
         ("config", "check", "study.yaml"), names="batch_size",
         setup=_edit("study.yaml", "  batch_size: 8", "  batch_size: 8\n  batch_size: 16")),
    Case("dup-key-profile", "3 bad input", "a key given twice in a profile file",
         _submit(), names="time", setup=_edit("profile.yaml", 'time: "0:30:00"',
                                              'time: "0:30:00"\ntime: "1:00:00"')),
    Case("rank0-top-level", "3 bad input", "top-level ranks [0] used by shared_lora",
         ("config", "check", "study.yaml"), names="ranks[0]",
         setup=_edit("study.yaml", "methods: [multi, mono, vanilla]",
                     "methods: [multi, shared_lora]\nranks: [0]")),
    Case("model-truncated", "3 bad input", "truncated model weights", names="model.safetensors",
         setup=_broken_model("weights"), call=_call_load_model),
    Case("model-empty-weights", "3 bad input", "empty model weights", names="model.safetensors",
         setup=_broken_model("empty-weights"), call=_call_load_model),
    Case("model-bad-config", "3 bad input", "damaged model config.json", names="config.json",
         setup=_broken_model("config"), call=_call_load_model),
    Case("model-bad-tokenizer", "3 bad input", "damaged tokenizer.json", names="tokenizer.json",
         setup=_broken_model("tokenizer"), call=_call_load_tokenizer),
    Case("tiny-cache-damaged", "3 bad input", "a damaged tiny-model cache is rebuilt",
         setup=_tiny_cache, call=_call_tiny_cache, expect="recovers", repairs="cache/tiny-"),
    Case("checkpoint-enospc", "3 bad input", "full disk while writing a checkpoint",
         names="step-000001.pt", setup=_save_first_checkpoint, call=_call_checkpoint_enospc),
    Case("checkpoint-truncated", "3 bad input",
         "a truncated checkpoint is skipped: the chain recomputes from step 1",
         setup=_truncated_checkpoint, call=_call_resume_checkpoint, expect="recovers",
         repairs="store/checkpoints/"),
    Case("checkpoint-flipped", "3 bad input",
         "a checkpoint with a flipped bit is detected: the chain recomputes from step 1",
         setup=_flipped_checkpoint, call=_call_resume_checkpoint, expect="recovers",
         repairs="store/checkpoints/"),
    Case("step-enospc", "3 bad input", "full disk while writing a step", names="store",
         setup=_delete_last_step, call=_call_put_step_enospc),
    Case("run-file-enospc", "3 bad input", "full disk while writing a run file", names="store",
         call=_call_put_run_enospc),
    Case("leftover-tmp", "3 bad input", "leftover temporary files of killed writers are no"
         " damage: analyze runs, reports no problem", _analyze(), setup=_leftover_tmp,
         expect="ok"),
    Case("locale-empty", "3 bad input", "an empty locale file",
         ("data", "inspect", "data"), names="en-US.jsonl", setup=_write("data/en-US.jsonl", "")),
    Case("inspect-dev-null", "3 bad input", "data inspect /dev/null",
         ("data", "inspect", "/dev/null"), names="/dev/null"),
    Case("inspect-missing", "3 bad input", "data inspect of a folder that does not exist",
         ("data", "inspect", "no-such-folder"), names="no-such-folder"),
    Case("schema-version-future", "3 bad input", "store marker of a newer schema version",
         _analyze(), names="STORE.json", setup=_marker(schema_version=99)),
    Case("schema-version-string", "3 bad input", "store marker with schema_version 'x'",
         _analyze(), names="STORE.json", setup=_marker(schema_version="x")),
    Case("consolidate-out-under-file", "3 bad input", "store consolidate --out afile/x.h5",
         ("store", "consolidate", "store", "--out", "afile/x.h5"), names="afile",
         setup=_write("afile", "a file, not a folder\n")),
    Case("consolidate-not-a-store", "3 bad input", "store consolidate of a folder without STORE.json",
         ("store", "consolidate", "data"), names="data"),
    Case("analyze-damaged-step", "3 bad input", "analyze of a store with a truncated step file",
         _analyze(), names="steps/", setup=_damage_step, expect="warn"),
    Case("analyze-garbage-step", "3 bad input", "analyze of a store with a foreign step file",
         _analyze(), names="steps/", setup=_garbage_step, expect="warn"),
    Case("analyze-damaged-run", "3 bad input", "analyze of a store with a truncated run file",
         _analyze(), names="runs/", setup=_damage_run_file, expect="warn"),
    # ---------------------------------------------------------- (5)/(7) wrong option values
    Case("opt-profile-unknown", "5 option", "an unknown --profile",
         ("submit", "study.yaml", "--profile", "no-such-profile", "--dry-run"),
         names="no-such-profile"),
    Case("opt-builtin-unknown", "5 option", "an unknown built-in config",
         ("config", "show", "no-such-config"), names="no-such-config"),
    Case("opt-run-unknown-config", "5 option", "run of an unknown config",
         ("run", "no-such-config"), names="no-such-config"),
    Case("opt-convention", "5 option", "a bad --convention", _analyze("--convention", "best"),
         names="--convention"),
    Case("opt-p-set", "5 option", "a bad --p-set", _analyze("--p-set", "all"), names="--p-set"),
    Case("opt-vitality", "5 option", "a bad --vitality grouping",
         _analyze("--vitality", "High=9"), names="vitality"),
    Case("opt-bootstrap-neg", "5 option", "a negative --bootstrap",
         ("analyze", "store", "--out", "{out}/report", "--bootstrap", "-1"), names="--bootstrap"),
    Case("opt-workers-neg", "5 option", "--workers -2", _analyze("--workers", "-2"),
         names="--workers"),
    Case("opt-out-missing", "5 option", "analyze without --out", ("analyze", "store"),
         names="--out"),
    Case("opt-analyze-no-store", "5 option", "analyze of a store that does not exist",
         ("analyze", "no-such-store", "--out", "{out}/report"), names="no-such-store"),
    Case("opt-unknown-command", "5 option", "an unknown command", ("analyse", "store"),
         names="analyse"),
    Case("opt-unknown-option", "5 option", "an unknown option", ("plan", "study.yaml", "--jsn"),
         names="--jsn"),
    Case("opt-inspect-locale", "5 option", "data inspect --locale of an unknown locale",
         ("data", "inspect", "data", "--locale", "xx-XX"), names="xx-XX"),
    Case("opt-languages-unknown", "5 option", "an unknown locale in data.languages",
         ("plan", "study.yaml", "--set", "data.languages=[en-US, xx-XX]"), names="xx-XX"),
    Case("opt-container-missing", "5 option", "--container of an image that does not exist",
         ("submit", "study.yaml", "--profile", "profile.yaml", "--container", "no-such.sif"),
         names="no-such.sif"),
    Case("opt-status-missing", "5 option", "status of a run folder that does not exist",
         ("status", "no-such-run"), names="no-such-run"),
    Case("opt-params-languages", "5 option", "params --languages -3",
         ("params", "--model", "model", "--languages", "-3"), names="--languages"),
    Case("opt-selftest-writers", "5 option", "store selftest --writers 0",
         ("store", "selftest", "{out}/st", "--writers", "0"), names="--writers"),
    Case("opt-prefetch-source", "5 option", "prefetch --source without =",
         ("prefetch", "study.yaml", "--cache", "{out}/cache", "--source", "massive"),
         names="--source"),
]  # fmt: skip

IDS = [c.id for c in CASES]
assert len(set(IDS)) == len(IDS), "case ids must be unique"


# --------------------------------------------------------------------------------------------
# running a case


@dataclass
class Outcome:
    handled: bool
    why: list[str] = field(default_factory=list)
    code: int | None = None
    stderr: str = ""
    seconds: float = 0.0


OUTCOMES: dict[str, Outcome] = {}  # filled by test_probe_case, read by test_probe_summary


@contextlib.contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """Warnings as a user's terminal shows them (pytest would only collect them): Python's
    default filters, printed to sys.stderr, so a warning counts as stderr output."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for cat in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", cat)
        warnings.showwarning = show
        yield


def _run_cli(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: Any) -> tuple[int, str, str]:
    from hpc_forget import cli

    monkeypatch.setattr(sys, "argv", ["hpc-forget", *argv])
    capsys.readouterr()
    code: int | None = 0
    try:
        with _warnings_to_stderr():
            cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception:  # an uncaught exception is a traceback for the user
        import traceback

        out = capsys.readouterr()
        return 1, out.out, out.err + "Traceback (uncaught)\n" + traceback.format_exc()
    out = capsys.readouterr()
    return int(code or 0), out.out, out.err


def _one_error_line(text: str, names: str, why: list[str]) -> None:
    lines = text.splitlines()
    if "Traceback" in text:
        why.append("traceback")
    if len(lines) != 1 or not lines[0].strip():
        why.append(f"{len(lines)} stderr lines, want 1")
    if lines and not lines[0].startswith("error:"):
        why.append("does not start with 'error:'")
    if names and names not in text:
        why.append(f"does not name {names!r}")


def run_case(
    case: Case, world: Path, out: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> Outcome:
    """Set up, run and judge one case in ``world`` (cwd); ``out`` is outside the world."""
    t0 = time.perf_counter()
    monkeypatch.chdir(world)
    if case.setup is not None:
        case.setup(world)
    before = _tree(world)
    stored = stored_run_ids(world)
    why: list[str] = []
    code: int | None = None
    err = ""
    if case.call is not None:
        capsys.readouterr()
        with monkeypatch.context() as mp:
            try:
                with _warnings_to_stderr():
                    case.call(world, mp)
            except UserError as exc:
                msg = f"error: {exc}"
                _one_error_line(msg, case.names, why)
                err = msg
                code = 2
            except BaseException as exc:  # noqa: BLE001 - the probe reports what escaped
                why.append(f"raised {type(exc).__name__}, not a UserError: {str(exc)[:120]!r}")
                code = 1
            else:
                if case.expect != "recovers":
                    why.append("no error raised")
                code = 0
        err += capsys.readouterr().err
        if case.expect == "recovers" and "Traceback" in err:
            why.append("traceback")
    else:
        argv = [a.replace("{out}", str(out)) for a in case.argv]
        code, stdout, err = _run_cli(argv, monkeypatch, capsys)
        if case.expect == "error":
            if code != 2:
                why.append(f"exit {code}, want 2")
            _one_error_line(err, case.names, why)
        elif case.expect == "warn":
            if code != 0:
                why.append(f"exit {code}, want 0")
            lines = err.splitlines()
            if "Traceback" in err:
                why.append("traceback")
            if not any(case.names in line for line in lines):
                why.append(f"stderr does not name {case.names!r}")
            if any(not line.strip() for line in lines):
                why.append("blank stderr lines")
        elif case.expect == "ok":
            if code != 0 or "Traceback" in err:
                why.append(f"exit {code}, want 0: {err.strip()[-200:]}")
            elif err.strip():
                why.append(f"stderr not empty: {err.strip()[:200]}")
        elif case.expect == "fresh":
            if code != 0:
                why.append(f"exit {code}, want 0: {err.strip()[:200]}")
            else:
                got = {t["run_id"] for t in json.loads(stdout)}
                stale = got & stored
                if stale:
                    why.append(f"{len(stale)} of {len(got)} planned runs reuse stored run ids")
    after = _tree(world)
    lost = sorted(k for k in before if after.get(k) != before[k])
    new = sorted(set(after) - set(before))
    if case.expect == "recovers":  # the damaged item may be rebuilt, nothing else touched
        lost = [k for k in lost if not k.startswith(case.repairs)]
        new = [k for k in new if not k.startswith(case.repairs)]
    if lost:
        why.append(f"changed or lost: {', '.join(lost[:3])}")
    if new:
        why.append(f"new files: {', '.join(new[:3])}")
    out = Outcome(handled=not why, why=why, code=code, stderr=err)
    out.seconds = time.perf_counter() - t0
    OUTCOMES[case.id] = out
    return out


@pytest.fixture
def world(template: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "world"
    shutil.copytree(template, dest)
    return dest


def test_the_world_is_sound(world: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """Controls: the unchanged config plans exactly the stored runs, and the store analyses
    without problems (so a case's failure is the case's, not the world's)."""
    monkeypatch.chdir(world)
    code, stdout, err = _run_cli(list(_fresh()), monkeypatch, capsys)
    assert code == 0, err
    assert {t["run_id"] for t in json.loads(stdout)} == stored_run_ids(world)
    code, stdout, err = _run_cli(["config", "check", "study.yaml"], monkeypatch, capsys)
    assert code == 0 and not err, err
    code, stdout, err = _run_cli(
        [a.replace("{out}", str(tmp_path)) for a in _submit()], monkeypatch, capsys
    )
    assert code == 0, err
    code, stdout, err = _run_cli(
        [a.replace("{out}", str(tmp_path)) for a in _analyze()], monkeypatch, capsys
    )
    assert code == 0 and not err.strip(), err
    assert "(3 runs" in stdout
    from hpc_forget.data.labels import LABELS
    from hpc_forget.models.hub import load_model

    load_model(str(world / "model"), list(LABELS))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_probe_case(case: Case, world: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    out = run_case(case, world, tmp_path / "out", monkeypatch, capsys)
    if not out.handled:
        pytest.fail(
            f"[{case.category}] {case.description}: {'; '.join(out.why)}\n"
            f"stderr: {out.stderr[-600:]}",
            pytrace=False,
        )


def test_probe_summary(template: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """Every case's outcome in one line of figures, then one line per case not handled."""
    for i, case in enumerate(CASES):
        if case.id not in OUTCOMES:  # not selected (e.g. -k summary): run it here
            world = tmp_path / f"w{i}"
            shutil.copytree(template, world)
            with monkeypatch.context() as mp:
                run_case(case, world, tmp_path / f"o{i}", mp, capsys)
    failed = [f"[{c.category}] {c.id}: {'; '.join(OUTCOMES[c.id].why)}" for c in CASES
              if not OUTCOMES[c.id].handled]  # fmt: skip
    n = len(CASES)
    line = f"probe: {n} cases, {n - len(failed)} handled (one line + exit 2 + nothing lost)"
    slowest = sorted(CASES, key=lambda c: -OUTCOMES[c.id].seconds)[:3]
    with capsys.disabled():
        print("\n" + line)
        for f in failed:
            print("  not handled: " + f)
        total = sum(o.seconds for o in OUTCOMES.values())
        print(f"  {total:.1f} s in all; slowest: "
              + ", ".join(f"{c.id} {OUTCOMES[c.id].seconds:.1f} s" for c in slowest))  # fmt: skip
    assert n >= 60
    assert not failed, line
