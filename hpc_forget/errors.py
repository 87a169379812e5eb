"""Every error whose message is a complete one-line answer for the user, in one place.

This module imports nothing, so the command line can catch these without importing torch,
h5py or transformers. Each stage raises its own subclass; the CLI prints ``error: <message>``
and exits 2 for any :class:`UserError`.
"""

from __future__ import annotations


def one_line(text: str) -> str:
    """``text`` with control characters (newline, CR, NUL, ESC, ...) escaped, so that a message
    stays one line and cannot move the terminal's cursor."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def shorten(text: str, limit: int = 240) -> str:
    """``text`` on one line (every run of whitespace, newlines included, one space), cut to
    ``limit`` characters with "..."."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def first_line(exc: BaseException | str, limit: int | None = 160) -> str:
    """The first line of an exception's message (its type's name if the message is empty),
    cut to ``limit`` characters with "..." (None: not cut)."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else (type(exc).__name__ if isinstance(exc, BaseException) else "")
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


class UserError(Exception):
    """A problem in the user's input or environment; the message is one line saying what to do."""


class ConfigError(UserError, ValueError):
    """A configuration problem; the message names the file (or option) and the key."""


class OrderError(UserError, ValueError):
    """An order that cannot be used with the run's languages."""


class DataError(UserError, ValueError):
    """Bad MASSIVE input: ``<file>:<line>: <what> — <what to do>``."""


class ModelError(UserError, ValueError):
    """A model or tokenizer that cannot be loaded."""


class StoreError(UserError):
    """The results store cannot be read or written."""


class LanguageError(UserError, ValueError):
    """An unknown locale or a bad vitality grouping."""


class MetricsError(UserError, ValueError):
    """A matrix or option the metrics cannot be computed from."""


class AnalysisError(UserError):
    """A store or option the analysis cannot use."""


class ContainerError(UserError, ValueError):
    """A container image or command line that cannot be built."""


class SlurmError(UserError):
    """A profile, submission or run folder problem."""


class PrefetchError(UserError):
    """A model or data set that cannot be fetched or verified."""


class WorkerError(UserError):
    """A manifest or array index the worker cannot use."""


class EstimateError(UserError):
    """A throughput record or a cost estimate that cannot be made (``plan --estimate``)."""


class BenchError(UserError, ValueError):
    """A ``hpc-forget bench`` option or setup that cannot be used (no GPU, no tokenizer)."""


def split_pair(
    text: str, option: str, error: type[Exception] = UserError, example: str = "KEY=VALUE"
) -> tuple[str, str]:
    """``"key=value"`` -> ``("key", "value")``: the one reader of every KEY=VALUE option
    (``--set``, ``--slurm``, ``--source``, ``--revision``, a vitality spec's groups).

    The key is stripped, the value is not (the caller types it). A missing ``=`` or an empty
    key raises ``error`` with one line naming ``option`` and showing ``example``.
    """
    key, sep, value = text.partition("=")
    shown = repr(shorten(text, 120))
    if not sep:
        raise error(one_line(f"{option} {shown}: use KEY=VALUE, e.g. {example}"))
    if not key.strip():
        raise error(
            one_line(
                f"{option} {shown}: the key before '=' is empty; use KEY=VALUE, e.g. {example}"
            )
        )
    return key.strip(), value
