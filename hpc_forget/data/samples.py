"""The real MASSIVE samples shipped in the package (``source: samples``) and how they are made."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from hpc_forget import files
from hpc_forget.data.corpus import CorpusBuilder, jsonl_lines
from hpc_forget.data.labels import SPLITS, RowError
from hpc_forget.data.splits import sample_rank
from hpc_forget.errors import DataError

SAMPLE_SEED = 0
SAMPLE_LOCALES = ("en-US", "de-DE", "sw-KE", "th-TH")  # the shipped samples (assets/massive)
# Rows per locale and split in the shipped samples (de-DE and sw-KE have no train split).
SAMPLE_SIZES: dict[str, dict[str, int]] = {
    "en-US": {"train": 2000, "dev": 300, "test": 300},
    "th-TH": {"train": 2000, "dev": 300, "test": 300},
    "de-DE": {"dev": 600, "test": 300},
    "sw-KE": {"dev": 600, "test": 300},
}

# --------------------------------------------------------------------------------------------
# shipped samples


def make_samples(
    src_dir: str | Path,
    out_dir: str | Path,
    sizes: Mapping[str, Mapping[str, int]] = SAMPLE_SIZES,
    seed: int = SAMPLE_SEED,
) -> dict[str, Path]:
    """Write ``<out_dir>/<locale>.jsonl`` samples: lines copied byte for byte from
    ``<src_dir>/<locale>.jsonl``, in file order, each ending in a newline.

    Per split, the valid rows are ranked by sha256(f"{seed}\\0{id}"); ids present in that split
    in every locale asking for it come first, then the locale's other ids; each locale takes
    the first ``sizes[locale][split]``. So dev/test ids are shared across locales, and a locale
    taking more rows (de-DE dev 600) holds those of one taking fewer (en-US dev 300).
    """
    src, out = Path(src_dir), Path(out_dir)
    rows: dict[str, dict[str, dict[str, tuple[int, bytes]]]] = {}  # locale/split/id -> line
    for loc in sizes:
        path = src / f"{loc}.jsonl"
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e.strerror}) — check src_dir") from None
        builder = CorpusBuilder(skip_invalid=True)
        rows[loc] = {s: {} for s in SPLITS}
        for lineno, raw, row in jsonl_lines(data):
            if isinstance(row, RowError):
                continue
            where = f"{path}:{lineno}"
            ex = builder.add(row, file=str(path), line=lineno, where=where, locale=loc, split=None)
            if ex is not None:
                rows[loc][ex.split][ex.id] = (lineno, raw.rstrip(b"\r"))
    chosen: dict[str, list[tuple[int, bytes]]] = {loc: [] for loc in sizes}
    for split in SPLITS:
        takers = [loc for loc in sizes if sizes[loc].get(split, 0) > 0]
        if not takers:
            continue
        shared = set.intersection(*(set(rows[loc][split]) for loc in takers))
        ranked_shared = sorted(shared, key=lambda i: sample_rank(seed, i))
        for loc in takers:
            n, own = sizes[loc][split], rows[loc][split]
            order = ranked_shared + sorted(set(own) - shared, key=lambda i: sample_rank(seed, i))
            if n > len(order):
                raise DataError(
                    f"{src / f'{loc}.jsonl'}: the {split} split has {len(order)} valid rows but "
                    f"sizes asks for {n} — lower the size"
                )
            chosen[loc].extend(own[i] for i in order[:n])
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for loc, picked in chosen.items():
        path = out / f"{loc}.jsonl"
        blob = b"".join(raw + b"\n" for _, raw in sorted(picked))
        files.atomic_write(path, blob, "the samples", fix="choose another out_dir", error=DataError)
        written[loc] = path
    return written
