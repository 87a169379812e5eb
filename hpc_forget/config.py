"""Experiment configuration: typed dataclasses, loaded from YAML or TOML and validated once.

Every error names the file and the key (``demo.yaml: train.batch_size: must be a positive
integer, got 0``). The resolved configuration (defaults filled in) is what the store records
next to every score, and ``config_from_dict(config_to_dict(c)) == c``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from hpc_forget.errors import ConfigError

METHODS = ("multi", "mono", "vanilla", "shared_lora", "nonshared_lora")
LORA_METHODS = ("shared_lora", "nonshared_lora")
FULL_ONLY_METHODS = ("mono", "vanilla")
BUILTIN_CONFIGS = ("demo", "quick", "paper")


@dataclass(frozen=True)
class DataConfig:
    source: str = "samples"
    languages: tuple[str, ...] = ()
    max_train: int | None = None  # per language; None = all
    max_eval: int | None = None  # per language, for dev and test; None = all
    train_fraction: float = 1.0  # the data-scale factor
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
    precision: str = "auto"  # auto (bf16 on a GPU that supports it, else fp32) | bf16 | fp32
    pad_multiple: int = 8  # pad batches to a multiple of this: few distinct shapes
    max_grad_norm: float = 1.0  # 0 = no clipping
    cpu_threads: int = 0  # torch threads on CPU; 0 = torch's default (one per core)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    ranks: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class OrderSpec:
    """A language order: a paper order by number, a custom list, or random from a seed."""

    builtin: int | None = None
    custom: tuple[str, ...] | None = None
    random_seed: int | None = None


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

    @property
    def store_path(self) -> Path:
        return Path(self.store)


# --------------------------------------------------------------------------------------------
# loading


def builtin_config_text(name: str) -> str:
    """The text of a built-in config shipped inside the package."""
    ref = resources.files("hpc_forget") / "configs" / f"{name}.yaml"
    if not ref.is_file():
        raise ConfigError(
            f"no built-in config named {name!r}: choose one of {', '.join(BUILTIN_CONFIGS)}"
        )
    return ref.read_text(encoding="utf-8")


def load_config(
    spec: str | os.PathLike, *, overrides: dict[str, Any] | None = None
) -> ExperimentConfig:
    """Load a config from a YAML/TOML path or a built-in name (``demo``, ``paper``)."""
    spec_s = str(spec)
    path = Path(spec_s)
    if path.suffix.lower() in (".yaml", ".yml", ".toml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"{spec_s}: config file not found — check the path")
        origin = spec_s
        text = path.read_text(encoding="utf-8")
        is_toml = path.suffix.lower() == ".toml"
    elif spec_s in BUILTIN_CONFIGS:
        origin = f"<built-in {spec_s}>"
        text = builtin_config_text(spec_s)
        is_toml = False
    else:
        raise ConfigError(
            f"{spec_s}: not a config file (.yaml/.yml/.toml) nor a built-in config "
            f"({', '.join(BUILTIN_CONFIGS)})"
        )
    raw = _parse(text, origin, is_toml)
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    return config_from_dict(raw, origin=origin)


def _parse(text: str, origin: str, is_toml: bool) -> dict:
    try:
        raw = tomllib.loads(text) if is_toml else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f"{origin}:{line + 1}" if line is not None else origin
        msg = str(exc).splitlines()[0]
        raise ConfigError(f"{where}: cannot parse the config ({msg}) — fix the syntax") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: the config must be a mapping of keys to values")
    return raw


def _set_dotted(raw: dict, dotted: str, value: Any) -> None:
    node = raw
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


class _Checker:
    """Collects the file name so every message can name file and key."""

    def __init__(self, origin: str):
        self.origin = origin

    def fail(self, key: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.origin}: {key}: {msg}")

    def unknown(self, section: str, raw: dict, allowed: set[str]) -> None:
        extra = sorted(set(raw) - allowed)
        if extra:
            prefix = f"{section}." if section else ""
            raise self.fail(
                f"{prefix}{extra[0]}", f"unknown key; allowed: {', '.join(sorted(allowed))}"
            )

    def integer(self, key: str, v: Any, *, minimum: int = 1, none_ok: bool = False) -> int | None:
        if v is None and none_ok:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise self.fail(key, f"must be an integer >= {minimum}, got {v!r}")
        return v

    def number(self, key: str, v: Any, *, lo: float, hi: float, lo_open: bool = False) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.fail(key, f"must be a number, got {v!r}")
        if v < lo or v > hi or (lo_open and v == lo):
            rng = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
            raise self.fail(key, f"must be in {rng}, got {v!r}")
        return float(v)

    def string(self, key: str, v: Any) -> str:
        if not isinstance(v, str) or not v.strip():
            raise self.fail(key, f"must be a non-empty string, got {v!r}")
        return v

    def str_list(self, key: str, v: Any) -> tuple[str, ...]:
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not v:
            raise self.fail(key, "must be a non-empty list")
        return tuple(self.string(f"{key}[{i}]", x) for i, x in enumerate(v))


def config_from_dict(raw: dict, *, origin: str = "<config>") -> ExperimentConfig:
    """Validate a raw mapping (as parsed from YAML/TOML) into an ExperimentConfig."""
    c = _Checker(origin)
    top = {f.name for f in dataclasses.fields(ExperimentConfig)}
    c.unknown("", raw, top)
    for required in ("name", "store", "data", "models", "methods"):
        if required not in raw:
            raise c.fail(required, "missing; see `hpc-forget config show demo` for an example")
    name = c.string("name", raw["name"])
    store = c.string("store", str(raw["store"]) if raw["store"] is not None else None)
    data = _data(c, raw["data"])
    models = c.str_list("models", raw["models"])
    ranks = _ranks(c, "ranks", raw.get("ranks", [32, 64, 256]))
    methods = _methods(c, raw["methods"], ranks)
    seeds_raw = raw.get("seeds", [0])
    if isinstance(seeds_raw, int):
        seeds_raw = [seeds_raw]
    if not isinstance(seeds_raw, list) or not seeds_raw:
        raise c.fail("seeds", "must be a non-empty list of integers")
    seeds = tuple(c.integer(f"seeds[{i}]", s, minimum=0) for i, s in enumerate(seeds_raw))
    orders = _orders(c, raw.get("orders", []), data.languages)
    if any(m.name in ("vanilla", "shared_lora") for m in methods) and not orders:
        raise c.fail("orders", "sequential methods (vanilla, shared_lora) need at least one order")
    cache_dir = raw.get("cache_dir")
    if cache_dir is not None:
        cache_dir = c.string("cache_dir", str(cache_dir))
    train = _train(c, raw.get("train", {}) or {})
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
    )


def _data(c: _Checker, raw: Any) -> DataConfig:
    if not isinstance(raw, dict):
        raise c.fail("data", "must be a mapping (source, languages, ...)")
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
    if missing_train not in ("error", "split-dev"):
        raise c.fail("data.missing_train", f"must be 'error' or 'split-dev', got {missing_train!r}")
    return DataConfig(
        source=c.string("data.source", str(raw.get("source", "samples"))),
        languages=langs,
        max_train=c.integer("data.max_train", raw.get("max_train"), none_ok=True),
        max_eval=c.integer("data.max_eval", raw.get("max_eval"), none_ok=True),
        train_fraction=c.number(
            "data.train_fraction", raw.get("train_fraction", 1.0), lo=0.0, hi=1.0, lo_open=True
        ),
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


def _bool(c: _Checker, key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise c.fail(key, f"must be true or false, got {v!r}")
    return v


def _ranks(c: _Checker, key: str, v: Any) -> tuple[int, ...]:
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, list) or not v:
        raise c.fail(key, "must be a non-empty list of integers (0 = no LoRA)")
    out = tuple(c.integer(f"{key}[{i}]", r, minimum=0) for i, r in enumerate(v))
    if len(set(out)) != len(out):
        raise c.fail(key, "lists a rank twice")
    return out


def _methods(c: _Checker, raw: Any, ranks: tuple[int, ...]) -> tuple[MethodSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise c.fail("methods", f"must be a non-empty list of: {', '.join(METHODS)}")
    out: list[MethodSpec] = []
    for i, item in enumerate(raw):
        key = f"methods[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or "name" not in item:
            raise c.fail(key, "must be a method name or a mapping with 'name' (and 'ranks')")
        c.unknown(key, item, {"name", "ranks"})
        name = str(item["name"]).lower().replace("-", "_")
        if name not in METHODS:
            raise c.fail(
                f"{key}.name", f"unknown method {item['name']!r}; choose from {', '.join(METHODS)}"
            )
        if "ranks" in item:
            m_ranks = _ranks(c, f"{key}.ranks", item["ranks"])
        elif name in LORA_METHODS:
            m_ranks = ranks
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


def _orders(c: _Checker, raw: Any, languages: tuple[str, ...]) -> tuple[OrderSpec, ...]:
    # Imported here: planning imports config.
    from hpc_forget.planning import PAPER_ORDERS, OrderError, resolve_order

    if isinstance(raw, int | dict) and not isinstance(raw, bool):
        raw = [raw]
    if not isinstance(raw, list):
        raise c.fail(
            "orders", "must be a list of order numbers (1-5), locale lists or {random: SEED}"
        )
    out: list[OrderSpec] = []
    for i, item in enumerate(raw):
        key = f"orders[{i}]"
        if isinstance(item, bool):
            raise c.fail(key, f"not an order: {item!r}")
        if isinstance(item, int):
            if item not in PAPER_ORDERS:
                raise c.fail(key, f"the paper has orders 1-5, got {item}")
            spec = OrderSpec(builtin=item)
        elif isinstance(item, list):
            spec = OrderSpec(custom=c.str_list(key, item))
        elif isinstance(item, dict) and set(item) == {"random"}:
            spec = OrderSpec(random_seed=c.integer(f"{key}.random", item["random"], minimum=0))
        else:
            raise c.fail(key, "must be an order number (1-5), a list of locales or {random: SEED}")
        try:
            resolve_order(spec, languages)
        except OrderError as exc:
            raise c.fail(key, str(exc)) from None
        out.append(spec)
    if len(set(out)) != len(out):
        raise c.fail("orders", "lists the same order twice")
    return tuple(out)


def _train(c: _Checker, raw: Any) -> TrainConfig:
    if not isinstance(raw, dict):
        raise c.fail("train", "must be a mapping of hyper-parameters")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    c.unknown("train", raw, set(fields))
    d = TrainConfig()
    kw: dict[str, Any] = {}
    for name, v in raw.items():
        key = f"train.{name}"
        default = getattr(d, name)
        if name == "lr_head_lora" and v is None:
            kw[name] = None
        elif name == "precision":
            if v not in ("auto", "bf16", "fp32"):
                raise c.fail(key, f"must be auto, bf16 or fp32, got {v!r}")
            kw[name] = v
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
        elif o.custom is not None:
            orders.append(list(o.custom))
        else:
            orders.append({"random": o.random_seed})
    data = dataclasses.asdict(cfg.data)
    data["languages"] = list(cfg.data.languages)
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
    }


def dump_yaml(d: dict) -> str:
    return yaml.safe_dump(d, sort_keys=False, allow_unicode=True)


# --------------------------------------------------------------------------------------------
# model specs


def split_revision(spec: str) -> tuple[str, str | None]:
    """``"xlm-roberta-base@e73636d"`` -> ``("xlm-roberta-base", "e73636d")``; no ``@`` -> None.

    A config pins a model's revision (a commit hash, tag or branch on the Hub) by writing
    ``NAME@REVISION`` in ``models`` or ``{name: NAME, revision: REVISION}``; both are stored as
    ``NAME@REVISION``, which is also what the run key records.
    """
    name, sep, rev = spec.rpartition("@")
    if not sep or not name or not rev or "/" in rev:
        return spec, None
    return name, rev
