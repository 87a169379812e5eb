"""Experiment configuration: typed dataclasses, loaded from YAML or TOML and validated once.

Every error names the file and the key (``demo.yaml: train.batch_size: must be a positive
integer, got 0``). The resolved configuration (defaults filled in) is what the store records
next to every score, and ``config_from_dict(config_to_dict(c)) == c``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from hpc_forget.errors import ConfigError, OrderError, UserError, one_line, split_pair
from hpc_forget.study.methods import FULL_ONLY_METHODS, LORA_METHODS, METHOD_NAMES
from hpc_forget.study.orders import PAPER_ORDERS, OrderSpec, resolve_order
from hpc_forget.study.strategies import NONE, StrategySpec, strategy_spec

BUILTIN_CONFIGS = ("demo", "quick", "paper", "strategies")

#: Resolves ``{advised: STORE}``: ``advise(store, data.languages) -> order``, raising a
#: UserError whose message says what is wrong. The study stage may not import the analysis, so
#: the layers above (the command line, ``run_study``) pass
#: ``hpc_forget.analysis.advice.advised_order`` in (docs/advice.md).
Advise = Callable[[str, tuple[str, ...]], Sequence[str]]


@dataclass(frozen=True)
class DataConfig:
    source: str = "samples"
    languages: tuple[str, ...] = ()
    max_train: int | None = None  # per language; None = all
    max_eval: int | None = None  # per language, for dev and test; None = all
    train_fraction: float = 1.0  # the data-scale factor: the first of train_fractions
    train_fractions: tuple[float, ...] = (1.0,)  # the data-scale sweep axis (a list in a file)
    skip_invalid: bool = False
    missing_train: str = "error"  # or "split-dev": carve train data from dev
    dev_fraction_for_train: float = 0.5


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters. ``*_full`` apply without LoRA, ``*_lora`` with it (paper defaults)."""

    lr_full: float = 5e-5
    lr_lora: float = 5e-6
    lr_head_lora: float | None = None  # the classifier's lr in LoRA runs; None = lr_lora
    max_epochs_full: int = 50
    max_epochs_lora: int = 100
    patience_full: int = 5
    patience_lora: int = 15
    min_epochs_full: int = 0  # epochs always trained before patience may stop a step
    min_epochs_lora: int = 0
    batch_size: int = 32
    eval_batch_size: int = 512
    max_length: int = 128
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    lora_dropout: float = 0.1
    # auto (bf16 on a GPU with real bf16 units: compute capability >= 8.0; else fp32) | bf16
    # | fp16 (CUDA only, with a gradient scaler) | fp32
    precision: str = "auto"
    pad_multiple: int = 8  # pad batches to a multiple of this: few distinct shapes
    max_grad_norm: float = 1.0  # 0 = no clipping
    cpu_threads: int = 0  # torch threads on CPU; 0 = torch's default (one per core)
    lora_head: str = "train"  # LoRA runs: train the classifier with the adapter, or "frozen"
    # data-parallel processes (GPUs) per task; part of the run's identity (the effective batch
    # is batch_size x processes). 1 = one GPU per task; more needs as many GPUs per task
    processes: int = 1
    # minutes between periodic checkpoints inside a step (a node failure or an OOM kill loses
    # at most this much of a step); 0 = off. Cannot change a score (not in the run identity)
    checkpoint_minutes: float = 30.0


@dataclass(frozen=True)
class MethodSpec:
    name: str
    ranks: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    store: str
    data: DataConfig
    models: tuple[str, ...]
    methods: tuple[MethodSpec, ...]
    orders: tuple[OrderSpec, ...] = ()
    seeds: tuple[int, ...] = (0,)
    ranks: tuple[int, ...] = (32, 64, 256)
    cache_dir: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    strategies: tuple[StrategySpec, ...] = (NONE,)

    @property
    def store_path(self) -> Path:
        return Path(self.store)


# --------------------------------------------------------------------------------------------
# loading

#: A key path as the messages write it: ``("methods", 0, "ranks")`` is ``methods[0].ranks``.
KeyPath = tuple[str | int, ...]

_MAX_INT = 2**31 - 1  # every integer key: larger values overflow torch/numpy or make no sense


def builtin_config_text(name: str) -> str:
    """The text of a built-in config shipped inside the package."""
    ref = resources.files("hpc_forget") / "configs" / f"{name}.yaml"
    if name not in BUILTIN_CONFIGS or not ref.is_file():
        raise ConfigError(
            f"no built-in config named {one_line(repr(name))}: choose one of "
            f"{', '.join(BUILTIN_CONFIGS)}"
        )
    return ref.read_text(encoding="utf-8")


def load_config(
    spec: str | os.PathLike,
    *,
    overrides: Mapping[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
    advise: Advise | None = None,
) -> ExperimentConfig:
    """Load a config from a YAML/TOML path or a built-in name (``demo``, ``paper``).

    ``overrides`` maps dotted keys to values (``{"train.batch_size": 64}``, what
    :func:`parse_sets` makes of ``--set`` options); an error in one names ``--set KEY=VALUE``
    (or ``labels[KEY]``, e.g. ``--cache``), an error from the file names ``FILE:LINE: KEY``.
    ``advise`` resolves orders written ``{advised: STORE}`` (see :data:`Advise`); without it
    such an order must carry its ``order`` list (as :func:`config_to_dict` writes it).
    """
    spec_s = str(spec)
    path = Path(spec_s)
    if path.suffix.lower() in (".yaml", ".yml", ".toml") or path.exists():
        if not path.exists():
            raise ConfigError(one_line(f"{spec_s}: config file not found — check the path"))
        if not path.is_file():
            raise ConfigError(one_line(f"{spec_s}: not a file — give a .yaml or .toml file"))
        origin = spec_s
        text = _read_text(path, origin)
        is_toml = path.suffix.lower() == ".toml"
    elif spec_s in BUILTIN_CONFIGS:
        origin = f"<built-in {spec_s}>"
        text = builtin_config_text(spec_s)
        is_toml = False
    else:
        raise ConfigError(
            one_line(
                f"{spec_s}: not a config file (.yaml/.yml/.toml) nor a built-in config "
                f"({', '.join(BUILTIN_CONFIGS)})"
            )
        )
    raw, lines = _parse(text, origin, is_toml)
    applied: list[tuple[KeyPath, str]] = []
    for dotted, value in (overrides or {}).items():
        label = (labels or {}).get(dotted) or f"--set {dotted}={_show(value)}"
        parts = _dotted_parts(dotted, label)
        _set_dotted(raw, parts, value, label)
        applied.append((parts, one_line(label)))
    return _build(raw, _Checker(origin, lines, applied), advise)


def parse_sets(pairs: Iterable[str], *, command: str = "hpc-forget") -> dict[str, Any]:
    """``("train.batch_size=64", ...)`` -> ``{"train.batch_size": 64}``, values read as YAML.

    Every error is one line naming the ``--set`` option; ``command`` is the command line's
    name for the ``--help`` hint (``hpc-forget run``).
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, text = split_pair(
            pair, "--set", ConfigError, f"train.batch_size=64 (see {command} --help)"
        )
        if _has_control(pair):  # before YAML, which would fold a newline into a space
            raise ConfigError(
                one_line(
                    f"--set {pair!r}: contains a control character (newline, tab, ...), which"
                    " no config value may hold; remove it"
                )
            )
        label = f"--set {key}={text}"
        _dotted_parts(key, label)
        out[key] = _yaml_value(text, label)
    return out


def _read_text(path: Path, origin: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            one_line(f"{origin}: not UTF-8 text (byte {exc.start}) — save it as UTF-8")
        ) from None
    except OSError as exc:
        raise ConfigError(one_line(f"{origin}: cannot read ({exc.strerror or exc})")) from None


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-5`` as a number (YAML 1.1 wants ``1.0e-5``; a learning rate
    written the usual way must not silently become a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _yaml_problem(exc: yaml.YAMLError) -> tuple[int | None, str]:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["invalid YAML"])[0]
    return line, problem


def _load_yaml(
    text: str, where: str, loader_cls: type[yaml.SafeLoader] | type[yaml.BaseLoader] = _Loader
) -> tuple[Any, dict[KeyPath, int]]:
    """Parse YAML, rejecting duplicate keys (at any depth); also return each key's line."""
    loader = loader_cls(text)
    lines: dict[KeyPath, int] = {}
    try:
        node = loader.get_single_node()
        if node is None:
            return None, lines
        _walk(loader, node, (), lines, where, set())
        return loader.construct_document(node), lines
    finally:
        loader.dispose()


def load_yaml_unique(text: str, where: str, *, strings: bool = False) -> Any:
    """Parse a user's YAML file: a duplicate key at any depth is a one-line ConfigError naming
    ``where:LINE`` (plain YAML keeps the last one silently). ``strings``: every scalar stays a
    string (YAML's BaseLoader), as cluster profiles want. YAMLError passes through."""
    return _load_yaml(text, where, yaml.BaseLoader if strings else _Loader)[0]


def _walk(
    loader: Any,
    node: yaml.Node,
    path: KeyPath,
    lines: dict[KeyPath, int],
    where: str,
    active: set[int],
) -> None:
    if id(node) in active:  # a recursive alias
        return
    active.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = loader.construct_object(key_node)
            try:
                hash(key)
            except TypeError:  # pragma: no cover - scalars are hashable
                continue
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(
                    one_line(
                        f"{where}:{line}: {_key_name((*path, key))}: duplicate key (first at "
                        f"line {seen[key]}) — keep one"
                    )
                )
            seen[key] = line
            lines[(*path, key)] = line
            _walk(loader, value_node, (*path, key), lines, where, active)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            _walk(loader, item, (*path, i), lines, where, active)
    active.discard(id(node))


def _parse(text: str, origin: str, is_toml: bool) -> tuple[dict, dict[KeyPath, int]]:
    lines: dict[KeyPath, int] = {}
    try:
        if is_toml:
            raw: Any = tomllib.loads(text)
        else:
            raw, lines = _load_yaml(text, origin)
    except tomllib.TOMLDecodeError as exc:
        msg = (str(exc).splitlines() or ["invalid TOML"])[0]
        raise ConfigError(
            one_line(f"{origin}: cannot parse the config ({msg}) — fix the syntax")
        ) from None
    except yaml.YAMLError as exc:
        line, problem = _yaml_problem(exc)
        where = f"{origin}:{line}" if line is not None else origin
        raise ConfigError(
            one_line(f"{where}: cannot parse the config ({problem}) — fix the syntax")
        ) from None
    except RecursionError:
        raise ConfigError(one_line(f"{origin}: the config is nested too deeply")) from None
    if not isinstance(raw, dict):
        raise ConfigError(one_line(f"{origin}: the config must be a mapping of keys to values"))
    return raw, lines


def _yaml_value(text: str, label: str) -> Any:
    """One ``--set`` value, read as YAML (``64``, ``[en-US, de-DE]``, ``null``)."""
    try:
        return _load_yaml(text, label)[0]
    except yaml.YAMLError as exc:
        problem = _yaml_problem(exc)[1]
        raise ConfigError(
            one_line(
                f"{label}: not a valid YAML value ({problem}) — quote text that holds "
                "':', '#', '[' or '{', e.g. --set 'name=\"a: b\"'"
            )
        ) from None
    except RecursionError:
        raise ConfigError(one_line(f"{label}: the value is nested too deeply")) from None


_SEGMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def _dotted_parts(dotted: str, label: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in dotted.split("."))
    if not dotted.strip() or any(not p for p in parts):
        raise ConfigError(
            one_line(
                f"{label}: empty key name in {dotted!r} — use KEY=VALUE with a dotted key, "
                "e.g. train.batch_size=64"
            )
        )
    bad = next((p for p in parts if not _SEGMENT.match(p)), None)
    if bad is not None:
        raise ConfigError(
            one_line(
                f"{label}: {bad!r} is not a key name — keys are dotted names such as "
                "train.batch_size (lists are set whole: --set 'seeds=[0, 1]')"
            )
        )
    return parts


def _set_dotted(raw: dict, parts: tuple[str, ...], value: Any, label: str) -> None:
    node = raw
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        elif not isinstance(nxt, dict):
            section = ".".join(parts[: i + 1])
            raise ConfigError(
                one_line(
                    f"{label}: {section} is {_got(nxt)}, not a section, so it has no key "
                    f"{parts[i + 1]!r} — set {section} itself"
                )
            )
        node = nxt
    node[parts[-1]] = value


def _show(value: Any, limit: int = 80) -> str:
    """A value as a user would type it (YAML flow style), on one line."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
        except yaml.YAMLError:
            text = repr(value)
        text = text.removesuffix("...").strip()
    text = one_line(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _got(value: Any) -> str:
    """A value in a message: strings quoted (``'fp8'``), the rest as YAML."""
    return _show(repr(value)) if isinstance(value, str) else _show(value)


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in text)


_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _key_path(key: str) -> KeyPath:
    return tuple(int(i) if i else n for n, i in _PATH_PART.findall(key))


def _key_name(path: KeyPath) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


class _Checker:
    """Knows where each key came from, so every message names the file and line, or --set."""

    def __init__(
        self,
        origin: str,
        lines: Mapping[KeyPath, int] | None = None,
        overrides: Sequence[tuple[KeyPath, str]] = (),
    ):
        self.origin = origin
        self.lines = dict(lines or {})
        self.overrides = list(overrides)

    def fail(self, key: str, msg: str) -> ConfigError:
        path = _key_path(key)
        for opath, label in reversed(self.overrides):  # the last --set of a key wins
            n = min(len(path), len(opath))
            if path[:n] == opath[:n]:
                where = label if path == opath else f"{label}: {key}"
                return ConfigError(one_line(f"{where}: {msg}"))
        line = next(
            (self.lines[path[:n]] for n in range(len(path), 0, -1) if path[:n] in self.lines),
            None,
        )
        where = f"{self.origin}:{line}" if line is not None else self.origin
        return ConfigError(one_line(f"{where}: {key}: {msg}"))

    def unknown(self, section: str, raw: dict, allowed: set[str]) -> None:
        extra = sorted(set(raw) - allowed, key=str)
        if extra:
            prefix = f"{section}." if section else ""
            raise self.fail(
                f"{prefix}{extra[0]}", f"unknown key; allowed: {', '.join(sorted(allowed))}"
            )

    def integer(
        self,
        key: str,
        v: Any,
        *,
        minimum: int = 1,
        maximum: int = _MAX_INT,
        none_ok: bool = False,
    ) -> int | None:
        if v is None and none_ok:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise self.fail(key, f"must be an integer >= {minimum}, got {_got(v)}")
        if v > maximum:
            raise self.fail(key, f"must be an integer <= {maximum:,}, got {v:,}")
        return v

    def number(self, key: str, v: Any, *, lo: float, hi: float, lo_open: bool = False) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.fail(key, f"must be a number, got {_got(v)}")
        if not math.isfinite(v):
            raise self.fail(key, f"must be a finite number, got {_got(v)}")
        if v < lo or v > hi or (lo_open and v == lo):
            rng = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
            raise self.fail(key, f"must be in {rng}, got {_got(v)}")
        return float(v)

    def string(self, key: str, v: Any, *, int_ok: bool = False) -> str:
        if int_ok and isinstance(v, int) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, str) or not v.strip():
            raise self.fail(key, f"must be a non-empty string, got {_got(v)}")
        if _has_control(v):
            raise self.fail(
                key, f"must not contain control characters (newline, tab, NUL, ...), got {v!r}"
            )
        return v

    def str_list(self, key: str, v: Any) -> tuple[str, ...]:
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not v:
            raise self.fail(key, f"must be a non-empty list, got {_got(v)}")
        return tuple(self.string(f"{key}[{i}]", x) for i, x in enumerate(v))


def config_from_dict(
    raw: dict, *, origin: str = "<config>", advise: Advise | None = None
) -> ExperimentConfig:
    """Validate a raw mapping (as parsed from YAML/TOML) into an ExperimentConfig."""
    if not isinstance(raw, dict):
        raise ConfigError(one_line(f"{origin}: the config must be a mapping of keys to values"))
    return _build(raw, _Checker(origin), advise)


def _build(raw: dict, c: _Checker, advise: Advise | None = None) -> ExperimentConfig:
    top = {f.name for f in dataclasses.fields(ExperimentConfig)}
    c.unknown("", raw, top)
    for required in ("name", "store", "data", "models", "methods"):
        if required not in raw:
            raise c.fail(required, "missing; see `hpc-forget config show demo` for an example")
    name = c.string("name", raw["name"], int_ok=True)
    store = c.string("store", raw["store"], int_ok=True)
    data = _data(c, raw["data"])
    models = _models(c, raw["models"])
    ranks = _ranks(c, "ranks", raw.get("ranks", [32, 64, 256]))
    methods = _methods(c, raw["methods"], ranks)
    seeds_raw = raw.get("seeds", [0])
    if isinstance(seeds_raw, int) and not isinstance(seeds_raw, bool):
        seeds_raw = [seeds_raw]
    if not isinstance(seeds_raw, list) or not seeds_raw:
        raise c.fail("seeds", f"must be a non-empty list of integers, got {_got(seeds_raw)}")
    seeds = tuple(c.integer(f"seeds[{i}]", s, minimum=0) for i, s in enumerate(seeds_raw))
    if len(set(seeds)) != len(seeds):
        dup = next(s for s in seeds if seeds.count(s) > 1)
        raise c.fail("seeds", f"seed {dup} is listed twice")
    orders = _orders(c, raw.get("orders", []), data.languages, advise)
    if any(m.name in ("vanilla", "shared_lora") for m in methods) and not orders:
        raise c.fail("orders", "sequential methods (vanilla, shared_lora) need at least one order")
    cache_dir = raw.get("cache_dir")
    if cache_dir is not None:
        cache_dir = c.string("cache_dir", cache_dir, int_ok=True)
    train = _train(c, {} if raw.get("train") is None else raw["train"])
    strategies = _strategies(c, raw.get("strategies", ["none"]), methods)
    return ExperimentConfig(
        name=name,
        store=store,
        data=data,
        models=models,
        methods=methods,
        orders=orders,
        seeds=seeds,
        ranks=ranks,
        cache_dir=cache_dir,
        train=train,
        strategies=strategies,
    )


def _strategies(c: _Checker, raw: Any, methods: tuple[MethodSpec, ...]) -> tuple[StrategySpec, ...]:
    """The strategies axis: each entry a name or a mapping; every method runs with each
    strategy it composes with (study/strategies.py), so each method needs at least one."""
    if isinstance(raw, str | dict):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise c.fail("strategies", "must be a non-empty list of strategy names or mappings")
    out: list[StrategySpec] = []
    for i, item in enumerate(raw):
        try:
            out.append(strategy_spec(item, f"strategies[{i}]"))
        except ConfigError as exc:  # "<key>: <what>", the key under strategies[i]
            key, _, msg = str(exc).partition(": ")
            raise c.fail(key, msg) from None
    if len({s.canonical for s in out}) != len(out):
        raise c.fail("strategies", "lists the same strategy twice")
    for i, m in enumerate(methods):
        if not any(s.composes_with(m.name) for s in out):
            raise c.fail(
                f"methods[{i}]",
                f"{m.name} composes with none of the strategies listed; add none to strategies",
            )
    return tuple(out)


def _data(c: _Checker, raw: Any) -> DataConfig:
    if not isinstance(raw, dict):
        raise c.fail("data", f"must be a mapping (source, languages, ...), got {_got(raw)}")
    c.unknown("data", raw, {f.name for f in dataclasses.fields(DataConfig)})
    if "languages" not in raw:
        raise c.fail(
            "data.languages", "missing; list the MASSIVE locales to use, e.g. [en-US, de-DE]"
        )
    langs = c.str_list("data.languages", raw["languages"])
    if len(set(langs)) != len(langs):
        dup = next(x for x in langs if langs.count(x) > 1)
        raise c.fail("data.languages", f"{dup} is listed twice")
    missing_train = raw.get("missing_train", "error")
    if not isinstance(missing_train, str) or missing_train not in ("error", "split-dev"):
        raise c.fail(
            "data.missing_train", f"must be 'error' or 'split-dev', got {_got(missing_train)}"
        )
    fractions_raw = raw.get("train_fraction", 1.0)
    if not isinstance(fractions_raw, list):
        fractions_raw = [fractions_raw]
    if not fractions_raw:
        raise c.fail("data.train_fraction", "must be a number in (0, 1] or a non-empty list")
    fractions = tuple(
        c.number(
            "data.train_fraction" + (f"[{i}]" if len(fractions_raw) > 1 else ""),
            v,
            lo=0.0,
            hi=1.0,
            lo_open=True,
        )
        for i, v in enumerate(fractions_raw)
    )
    if len(set(fractions)) != len(fractions):
        raise c.fail("data.train_fraction", "lists the same fraction twice")
    return DataConfig(
        source=c.string("data.source", raw.get("source", "samples"), int_ok=True),
        languages=langs,
        max_train=c.integer("data.max_train", raw.get("max_train"), none_ok=True),
        max_eval=c.integer("data.max_eval", raw.get("max_eval"), none_ok=True),
        train_fraction=fractions[0],
        train_fractions=fractions,
        skip_invalid=_bool(c, "data.skip_invalid", raw.get("skip_invalid", False)),
        missing_train=missing_train,
        dev_fraction_for_train=c.number(
            "data.dev_fraction_for_train",
            raw.get("dev_fraction_for_train", 0.5),
            lo=0.0,
            hi=1.0,
            lo_open=True,
        ),
    )


_REVISION = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def _models(c: _Checker, raw: Any) -> tuple[str, ...]:
    """Model specs; ``{name: NAME, revision: REV}`` is stored as ``NAME@REV``."""
    if isinstance(raw, str | dict):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise c.fail(
            "models",
            "must be a non-empty list of presets, hub ids or paths (NAME@REVISION or "
            f"{{name: NAME, revision: REVISION}} pins a Hub commit), got {_got(raw)}",
        )
    out: list[str] = []
    for i, item in enumerate(raw):
        key = f"models[{i}]"
        if isinstance(item, dict):
            c.unknown(key, item, {"name", "revision"})
            if "name" not in item:
                raise c.fail(key, "a model mapping needs 'name' (and 'revision')")
            name = c.string(f"{key}.name", item["name"])
            rev = item.get("revision")
            if rev is None:
                spec = name
            else:
                rev = pinned_revision(c, f"{key}.revision", rev)
                if split_revision(name)[1] is not None:
                    raise c.fail(f"{key}.name", f"{name!r} already pins a revision: give it once")
                spec = f"{name}@{rev}"
                if split_revision(spec) != (name, rev):
                    raise c.fail(
                        f"{key}.revision",
                        f"{name!r} is a local path; a revision pins a Hub model — drop it",
                    )
        else:
            spec = c.string(key, item)
            name, rev = split_revision(spec)
            if rev is not None:
                pinned_revision(c, key, rev)
            elif spec.endswith("@"):
                raise c.fail(key, f"{spec!r}: empty revision — write NAME@REVISION or drop the @")
        if spec != spec.strip():
            raise c.fail(key, f"{spec!r} starts or ends with a space")
        out.append(spec)
    if len(set(out)) != len(out):
        dup = next(m for m in out if out.count(m) > 1)
        raise c.fail("models", f"{dup} is listed twice")
    return tuple(out)


def pinned_revision(c: _Checker, key: str, v: Any) -> str:
    if not isinstance(v, str):
        raise c.fail(
            key,
            f"a revision must be text (quote it: revision: '0123abc'), got {_got(v)}",
        )
    if not _REVISION.match(v) or any(part in (".", "..") for part in v.split("/")):
        raise c.fail(
            key,
            f"revision {one_line(repr(v))} must be a commit hash, tag or branch: letters, "
            "digits and . _ - / (no @, no spaces, no '..')",
        )
    return v


def _bool(c: _Checker, key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise c.fail(key, f"must be true or false, got {_got(v)}")
    return v


def _ranks(c: _Checker, key: str, v: Any) -> tuple[int, ...]:
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, list) or not v:
        raise c.fail(key, f"must be a non-empty list of integers (0 = no LoRA), got {_got(v)}")
    out = tuple(c.integer(f"{key}[{i}]", r, minimum=0) for i, r in enumerate(v))
    if len(set(out)) != len(out):
        raise c.fail(key, "lists a rank twice")
    return out


def _methods(c: _Checker, raw: Any, ranks: tuple[int, ...]) -> tuple[MethodSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise c.fail("methods", f"must be a non-empty list of: {', '.join(METHOD_NAMES)}")
    out: list[MethodSpec] = []
    for i, item in enumerate(raw):
        key = f"methods[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or "name" not in item:
            raise c.fail(
                key,
                f"must be a method name or a mapping with 'name' (and 'ranks'), got {_got(item)}",
            )
        c.unknown(key, item, {"name", "ranks"})
        raw_name = item["name"]
        name = raw_name.lower().replace("-", "_") if isinstance(raw_name, str) else None
        if name not in METHOD_NAMES:
            raise c.fail(
                f"{key}.name",
                f"unknown method {_got(raw_name)}; choose from {', '.join(METHOD_NAMES)}",
            )
        if "ranks" in item:
            m_ranks = _ranks(c, f"{key}.ranks", item["ranks"])
        elif name in LORA_METHODS:
            m_ranks = ranks
            if 0 in ranks:  # inherited: the 0 is in the top-level ranks, so name that key
                raise c.fail(
                    f"ranks[{ranks.index(0)}]",
                    f"0 (no LoRA) is given to {name} ({key}), which needs LoRA ranks >= 1 — "
                    f"drop 0 from ranks or give {key} its own ranks",
                )
        else:
            m_ranks = (0,)
        if name in LORA_METHODS and 0 in m_ranks:
            raise c.fail(f"{key}.ranks", f"{name} needs LoRA ranks >= 1")
        if name in FULL_ONLY_METHODS and m_ranks != (0,):
            raise c.fail(f"{key}.ranks", f"{name} is full fine-tuning: leave ranks out")
        out.append(MethodSpec(name=name, ranks=m_ranks))
    seen = [(m.name, r) for m in out for r in m.ranks]
    if len(set(seen)) != len(seen):
        dup = next(x for x in seen if seen.count(x) > 1)
        raise c.fail("methods", f"{dup[0]} with rank {dup[1]} is listed twice")
    return tuple(out)


def _orders(
    c: _Checker, raw: Any, languages: tuple[str, ...], advise: Advise | None = None
) -> tuple[OrderSpec, ...]:
    if isinstance(raw, int | dict) and not isinstance(raw, bool):
        raw = [raw]
    if not isinstance(raw, list):
        raise c.fail(
            "orders",
            "must be a list of order numbers (1-5), locale lists, {random: SEED} or "
            "{advised: STORE}",
        )
    out: list[OrderSpec] = []
    for i, item in enumerate(raw):
        key = f"orders[{i}]"
        if isinstance(item, bool):
            raise c.fail(key, f"not an order: {_got(item)}")
        if isinstance(item, int):
            if item not in PAPER_ORDERS:
                raise c.fail(key, f"the paper has orders 1-5, got {item}")
            spec = OrderSpec(builtin=item)
        elif isinstance(item, list):
            spec = OrderSpec(custom=c.str_list(key, item))
        elif isinstance(item, dict) and set(item) == {"random"}:
            spec = OrderSpec(random_seed=c.integer(f"{key}.random", item["random"], minimum=0))
        elif isinstance(item, dict) and "advised" in item:
            spec = _advised(c, key, item, languages, advise)
        else:
            raise c.fail(
                key,
                f"must be an order number (1-5), a list of locales, {{random: SEED}} or "
                f"{{advised: STORE}}, got {_got(item)}",
            )
        try:
            resolve_order(spec, languages)
        except OrderError as exc:
            raise c.fail(key, str(exc)) from None
        out.append(spec)
    if len(set(out)) != len(out):
        raise c.fail("orders", "lists the same order twice")
    return tuple(out)


def _advised(
    c: _Checker, key: str, item: dict, languages: tuple[str, ...], advise: Advise | None
) -> OrderSpec:
    """``{advised: STORE}``: the order the store's measurements advise for ``languages``
    (docs/advice.md). ``{advised: STORE, order: [...]}`` (what :func:`config_to_dict` writes)
    is that order, pinned: the store is not read again, so a store that has changed since
    cannot change a planned run. STORE is relative to the working directory, like ``store``."""
    c.unknown(key, item, {"advised", "order"})
    store = c.string(f"{key}.advised", item["advised"], int_ok=True)
    if "order" in item:
        return OrderSpec(custom=c.str_list(f"{key}.order", item["order"]), advised=store)
    if advise is None:
        raise c.fail(
            f"{key}.advised",
            "an advised order is read from the store by hpc-forget (config check, plan, run, "
            "submit); here, write the order too: {advised: STORE, order: [...]}",
        )
    try:
        order = tuple(advise(store, languages))
    except (UserError, OSError) as exc:
        raise c.fail(f"{key}.advised", str(exc)) from None
    return OrderSpec(custom=order, advised=store)


def _train(c: _Checker, raw: Any) -> TrainConfig:
    if not isinstance(raw, dict):
        raise c.fail("train", f"must be a mapping of hyper-parameters, got {_got(raw)}")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    c.unknown("train", raw, set(fields))
    d = TrainConfig()
    kw: dict[str, Any] = {}
    for name, v in raw.items():
        key = f"train.{name}"
        default = getattr(d, name)
        if name == "lr_head_lora" and v is None:
            kw[name] = None
        elif name == "lora_head":
            if v not in ("train", "frozen"):
                raise c.fail(key, f"must be train or frozen, got {_got(v)}")
            kw[name] = v
        elif name == "precision":
            if not isinstance(v, str) or v not in ("auto", "bf16", "fp16", "fp32"):
                raise c.fail(key, f"must be auto, bf16, fp16 or fp32, got {_got(v)}")
            kw[name] = v
        elif name == "checkpoint_minutes":
            kw[name] = c.number(key, v, lo=0.0, hi=1e6)
        elif isinstance(default, int):
            lo = 0 if name.startswith(("patience", "min_epochs")) or name == "cpu_threads" else 1
            kw[name] = c.integer(key, v, minimum=lo)
        elif name in ("warmup_ratio", "lora_dropout"):
            kw[name] = c.number(key, v, lo=0.0, hi=1.0)
        elif name in ("weight_decay", "max_grad_norm"):
            kw[name] = c.number(key, v, lo=0.0, hi=1e6)
        else:  # learning rates
            kw[name] = c.number(key, v, lo=0.0, hi=1.0, lo_open=True)
    return dataclasses.replace(d, **kw)


# --------------------------------------------------------------------------------------------
# serialising


def config_to_dict(cfg: ExperimentConfig) -> dict:
    """The resolved configuration as plain JSON-able data, in the same shape a file uses."""
    orders: list[Any] = []
    for o in cfg.orders:
        if o.builtin is not None:
            orders.append(o.builtin)
        elif o.advised is not None:
            orders.append({"advised": o.advised, "order": list(o.custom or ())})
        elif o.custom is not None:
            orders.append(list(o.custom))
        else:
            orders.append({"random": o.random_seed})
    data = dataclasses.asdict(cfg.data)
    data["languages"] = list(cfg.data.languages)
    fractions = data.pop("train_fractions")
    data["train_fraction"] = fractions[0] if len(fractions) == 1 else list(fractions)
    return {
        "name": cfg.name,
        "store": cfg.store,
        "cache_dir": cfg.cache_dir,
        "data": data,
        "models": list(cfg.models),
        "methods": [{"name": m.name, "ranks": list(m.ranks)} for m in cfg.methods],
        "ranks": list(cfg.ranks),
        "orders": orders,
        "seeds": list(cfg.seeds),
        "train": dataclasses.asdict(cfg.train),
        "strategies": [
            s.name if not s.params else {"name": s.name, **_plain(s.kwargs())}
            for s in cfg.strategies
        ],
    }


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


def dump_yaml(d: dict) -> str:
    return yaml.safe_dump(d, sort_keys=False, allow_unicode=True)


# --------------------------------------------------------------------------------------------
# model specs


def split_revision(spec: str) -> tuple[str, str | None]:
    """``"xlm-roberta-base@e73636d"`` -> ``("xlm-roberta-base", "e73636d")``; no ``@`` -> None.

    A config pins a model's revision (a commit hash, tag or branch on the Hub, e.g.
    ``refs/pr/1``) by writing ``NAME@REVISION`` in ``models`` or ``{name: NAME, revision:
    REVISION}``; both are stored as ``NAME@REVISION``, which is also what the run key records.
    A local path (``/x``, ``./x``, ``~/x``) is never split: its ``@`` is part of a folder name.
    """
    name, sep, rev = spec.rpartition("@")
    if not sep or not name or not rev or name.startswith(("/", ".", "~")) or "\\" in spec:
        return spec, None
    return name, rev
