"""Every setting of a run, defined once: its name, default, check, help text and environment variable.

``Settings`` is the one definition. Each field carries an ``Option`` (in its
metadata) from which both the Python API and the command line are made:
``Settings`` checks its values with the option's rule, ``Ingestor(**options)``
takes the fields as keywords, and ``embedlib ingest`` builds its arguments
from the options that have a ``flag`` (see ``cli.arguments.add_option``), so
a default, a check or a help text cannot drift between them.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from embedlib.errors import ConfigError
from embedlib.rules import Amount, Anything, Choice, Device, Flag, Name, Rule, Text, Whole

DEFAULT_MODEL = "all-MiniLM-L6-v2"
AUTO = "auto"  # the executor chosen for the model (see run.executors.make_executor)

# How vectors are stored (--dtype): pgvector's ``vector`` holds float32, 4
# bytes per dimension; ``halfvec`` holds float16, 2 (docs/performance.md#halfvec
# has what it costs in recall). A target keeps the type it was created with.
VECTOR_TYPES = {"float": "vector", "half": "halfvec"}
DTYPES = tuple(VECTOR_TYPES)
INDEX_METHODS = ("hnsw", "ivfflat")
METRICS = ("cosine", "l2", "ip")  # pgvector's distance operators: <=>, <->, <#>

# Where a local model runs (--device): auto takes a GPU where torch sees one (CUDA, then Apple's
# MPS), else the CPU. Its arithmetic (--precision): float16 and bfloat16 halve the weights and
# about double a GPU's speed; float16 is refused on a CPU, which has no fast kernels for it.
PRECISIONS = ("fp32", "fp16", "bf16")

DSN_ENV_VARS = ("EMBEDLIB_DSN", "DATABASE_URL")  # highest priority first
WORKERS_ENV_VAR = "EMBED_WORKERS"  # the name the original script used


@dataclass(frozen=True)
class Option:
    """How a setting is checked, documented and given on the command line."""

    rule: Rule
    help: str
    flag: str | None = None  # on the ``embedlib ingest`` command line; None: the Python API only
    env: tuple[str, ...] = ()  # read when the setting is not given, first set wins
    metavar: str | None = None


def option(default: Any, rule: Rule, help: str, **details: Any) -> Any:
    """A ``Settings`` field: its default, and the ``Option`` that says the rest."""
    return field(default=default, metadata={"option": Option(rule, help, **details)})


@dataclass(frozen=True)
class Settings:
    """Everything that shapes a run, checked on construction. ``None`` means "the default"
    where the default depends on something else (the environment, the executor, the target)."""

    table: str = option(None, Name(), "source table (optionally schema.table)")
    dsn: str | None = option(
        None,
        Text(),
        "PostgreSQL connection string (default: $EMBEDLIB_DSN, $DATABASE_URL, else the embedded server)",
        env=DSN_ENV_VARS,
        flag="--dsn",
    )
    text_column: str = option("text", Name(), "column holding the text (default: %(default)s)", flag="--text-column")
    # Several columns as one text: each {column} cast to text, NULL as empty (db.relations.parse_template).
    text_template: str | None = option(
        None,
        Text(),
        "build each row's text from several columns, as '{title}\\n\\n{body}' (NULL as empty); "
        "instead of --text-column",
        flag="--text-template",
        metavar="TEMPLATE",
    )
    id_column: str = option("id", Name(), "unique id column (default: %(default)s)", flag="--id-column")
    target: str | None = option(
        None, Name(), "table for vectors and metrics (default: TABLE_embeddings)", flag="--target"
    )
    # A name, local path or service URL, or any object with an ``encode`` method (see encode.base.Encoder).
    model: Any = option(  # noqa: RUF009 (a field(), like the others; ruff cannot tell with Any)
        DEFAULT_MODEL,
        Anything(),
        "model name, local path, or the URL of an OpenAI-compatible embeddings service, "
        "http://host:port/v1[#model] (default: %(default)s)",
        flag="--model",
    )
    executor: str = option(
        AUTO,
        Name(),
        "how batches run (default: auto = pipelined: one encoder, or one per worker for a service URL, "
        "with reads and writes overlapped; threaded with --autoscale)",
        flag="--executor",
    )
    workers: int | None = option(
        None,
        Whole(1),
        "parallel workers: writer threads (pipelined), threads, or processes "
        "(default: $EMBED_WORKERS, else the executor's own)",
        flag="--workers",
        env=(WORKERS_ENV_VAR,),
    )
    ray_address: str | None = option(
        None,
        Text(),
        "the Ray cluster for --executor ray (default: $RAY_ADDRESS, else a local Ray instance)",
        flag="--ray-address",
        env=("RAY_ADDRESS",),
        metavar="ADDRESS",
    )
    autoscale: bool = option(
        False,
        Flag(),
        "choose the number of workers while running, from the rows/s measured, up to --workers "
        "(default ceiling 16; threaded executor)",
        flag="--autoscale",
    )
    batch_size: int = option(100, Whole(1), "texts per batch: one transaction, one or more encode calls (%(default)s)")
    # Rows read per query. Larger than a batch so that duplicates can be folded and texts
    # sorted by length across several batches; also the span each run sharing the table leases.
    window_size: int | None = option(
        None,
        Whole(1),
        "source rows read, deduplicated and sorted at a time; also the span each run sharing "
        "the table leases (default: 10000, or 10 batches if larger)",
        flag="--window-size",
    )
    # The default is the model's own (encode.local): 2048 for the default model on a CPU, the
    # fastest for short and long texts there (docs/performance.md); more for a narrower model or a GPU.
    batch_tokens: int | None = option(
        None,
        Whole(0),
        "cap each call to the model at this many tokens (texts x longest; default: sized for the model "
        "and device, 2048 for the default model on a CPU; 0: no cap)",
        flag="--batch-tokens",
    )
    # None: $EMBEDLIB_DEVICE, else auto (see ``model_device``): a default the command line cannot
    # fill in, or the environment would never be read.
    device: str | None = option(
        None,
        Device(),
        "where a local model runs: auto (a GPU if torch sees one, else the CPU), cpu, cuda, cuda:N or mps "
        "(default: $EMBEDLIB_DEVICE, else auto)",
        flag="--device",
        env=("EMBEDLIB_DEVICE",),
    )
    precision: str = option(
        "fp32",
        Choice(PRECISIONS, "precision"),
        "a local model's arithmetic: fp32, fp16 (a GPU only) or bf16 (default: %(default)s)",
        flag="--precision",
    )
    metrics_only: bool = option(False, Flag(), "recompute metrics of embedded rows, no encoding", flag="--metrics-only")
    dtype: str | None = option(
        None,
        Choice(DTYPES, "dtype"),
        "how a new target stores vectors: float (pgvector vector) or half (halfvec: half the space, "
        "recall cost in docs/performance.md); default: the existing target's type, else float",
        flag="--dtype",
    )
    # Long texts (plan.chunking): a chunked target holds one row per chunk, from its creation.
    chunk_tokens: int | None = option(
        None,
        Whole(8),
        "cut texts longer than this many tokens (the model's tokenizer counts) into chunks, each embedded; "
        "a new target is then chunked (default: the existing target's way, else no chunks)",
        flag="--chunk-tokens",
        metavar="N",
    )
    chunk_overlap: int = option(
        0,
        Whole(0),
        "with --chunk-tokens: each chunk also begins with up to this many tokens of the one before",
        flag="--chunk-overlap",
        metavar="M",
    )
    max_attempts: int = option(
        3,
        Whole(1),
        "runs that try a row the model fails on before leaving it out (default: %(default)s)",
        flag="--max-attempts",
    )
    reconnect_s: float = option(
        60.0,
        Amount("seconds"),
        "how long to keep reconnecting when the database drops a connection (default: %(default)g)",
        flag="--reconnect-timeout",
        metavar="SECONDS",
    )
    index: str | None = option(
        None,
        Choice(INDEX_METHODS, "index method"),
        "build this pgvector index on the vectors after the load (never before: it would slow the load)",
        flag="--index",
    )
    metric: str = option(
        "cosine", Choice(METRICS, "metric"), "the index's metric (default: %(default)s)", flag="--metric"
    )
    progress: bool = option(False, Flag(), "show a progress bar")
    # Following a table (``--follow``): how long to wait between runs at most. A tracked table's
    # changes wake the follower at once; on an untracked one each look scans the source.
    poll_interval_s: float = option(
        5.0,
        Amount("seconds"),
        "with --follow: seconds between looks at the table for changes; on an untracked table each look "
        "scans it, a tracked one's changes wake the follower at once (default: %(default)g)",
        flag="--poll-interval",
        metavar="SECONDS",
    )

    def __post_init__(self) -> None:
        if self.table is None:
            raise ConfigError("table must be given", option="table")
        for name, spec in OPTIONS.items():
            value = getattr(self, name)
            if value is not None:
                spec.rule.check(name, value)

    @classmethod
    def resolve(cls, **given: Any) -> Settings:
        """Settings from keywords, with what was not given taken from the environment where an
        option names a variable; an unknown keyword is refused in one line."""
        unknown = sorted(set(given) - set(OPTIONS))
        if unknown:
            raise ConfigError(f"unknown option {unknown[0]!r} (options: {', '.join(OPTIONS)})", option=unknown[0])
        for name, spec in OPTIONS.items():
            if spec.env and given.get(name) in (None, ""):  # an empty --dsn "" is not a DSN either
                given[name] = _from_env(spec)
        return cls(**{name: value for name, value in given.items() if value is not None})

    @property
    def model_device(self) -> str:
        """Where a local model runs: ``device``, else ``auto`` (see encode.device.resolve_device)."""
        return self.device or AUTO

    @property
    def window(self) -> int:
        """Rows read per query: ``window_size``, else 10,000 or 10 batches, the larger."""
        return self.window_size or max(10_000, 10 * self.batch_size)

    @property
    def target_table(self) -> str:
        return self.target or f"{self.table}_embeddings"


OPTIONS: dict[str, Option] = {f.name: f.metadata["option"] for f in dataclasses.fields(Settings)}


def default(name: str) -> Any:
    """The default of setting ``name``."""
    return next(f.default for f in dataclasses.fields(Settings) if f.name == name)


def _from_env(spec: Option) -> Any:
    """The value of the first of ``spec.env`` that is set, checked by the option's rule."""
    for variable in spec.env:
        raw = os.environ.get(variable, "").strip()
        if raw:
            try:
                value = spec.rule.parse(raw)
            except ValueError:
                value = None
            if value is None or not spec.rule.accepts(value):
                raise ConfigError(f"{variable} must be {spec.rule.what}, got {raw!r}", option=variable)
            return value
    return None


def env_dsn() -> str | None:
    """The DSN named by the environment, or None for the embedded database."""
    return _from_env(OPTIONS["dsn"])


def env_workers() -> int | None:
    """``EMBED_WORKERS`` as an int, or None when unset (each executor has its own default)."""
    return _from_env(OPTIONS["workers"])
