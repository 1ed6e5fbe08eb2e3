"""``embedlib bench``: rows/s and speedup at 1, 2, 4, ... workers on a table."""

from __future__ import annotations

import argparse

from embedlib.cli.arguments import Parents, add_option, dsn_of, milliseconds, positive_int
from embedlib.errors import ConfigError, one_line
from embedlib.options import DEFAULT_MODEL
from embedlib.run.executors import AUTO, EXECUTORS


def add_parser(commands: argparse._SubParsersAction, parents: Parents) -> None:
    bench = commands.add_parser(
        "bench",
        parents=[parents.database, parents.source],
        help="measure rows/s and speedup at 1, 2, 4, ... MAX_WORKERS workers on a table",
        description="Embed TABLE into a scratch target (dropped afterwards) at 1, 2, 4, ... MAX_WORKERS "
        "workers and print rows/s and speedup over 1 worker. A missing TABLE is created from the "
        "bundled sample sentences.",
    )
    bench.add_argument("batch_size", type=positive_int, help="texts per batch")
    bench.add_argument("max_workers", type=positive_int, help="the most workers to measure")
    add_option(bench, "executor", choices=[AUTO, *EXECUTORS], help="(default: %(default)s)")
    bench.add_argument(
        "--db-latency-ms",
        type=milliseconds,
        default=0.0,
        metavar="MS",
        help="reach the database through a proxy adding MS to every round trip (and encode with a fast "
        "stand-in unless --model is given)",
    )
    bench.add_argument(
        "--encoder-latency-ms",
        type=milliseconds,
        default=0.0,
        metavar="MS",
        help="encode through a local OpenAI-compatible service that takes MS per request",
    )
    # No default here: the db-latency regime encodes with a fast stand-in unless a model is named.
    add_option(bench, "model", default=None, help=f"model name, path or service URL (default: {DEFAULT_MODEL})")
    bench.add_argument("--limit", type=positive_int, help="embed at most this many rows per run")
    bench.add_argument(
        "--rounds",
        type=positive_int,
        default=3,
        help="runs per worker count, the fastest kept: a shared machine's stalls only slow a run (default: 3)",
    )
    bench.add_argument("--save", metavar="PATH", help="also save the figures and machine info as JSON to PATH")
    bench.add_argument("--json", action="store_true", help="print the figures as one JSON object on stdout")
    bench.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from embedlib.cli import benchmark as bench
    from embedlib.cli.machine import machine_info

    if args.encoder_latency_ms and args.model:
        raise ConfigError("--encoder-latency-ms encodes through a local stand-in service; drop --model")
    dsn = dsn_of(args)
    loaded = bench.ensure_sample_table(dsn, args.table)
    if loaded and not args.json:
        print(f"table {args.table!r} did not exist: loaded {loaded} bundled sample sentences into it")
    regime = bench.Regime(db_latency_ms=args.db_latency_ms, encoder_latency_ms=args.encoder_latency_ms)
    shown: list[bench.Point] = []

    def show(point: bench.Point) -> None:
        shown.append(point)
        if args.json:
            return
        if len(shown) == 1:  # after the first run: a bad table or model fails in one line, before any output
            print(f"embedlib bench {args.table}: batch size {args.batch_size}, executor {point.executor}, "
                  f"regime {regime.name}, best of {args.rounds} runs each")  # fmt: skip
            print(bench.speedup_lines([])[0])
        print(bench.speedup_lines(shown)[-1], flush=True)

    points = bench.sweep(
        dsn,
        bench.Source(args.table, args.text_column, args.id_column, args.text_template),
        regime=regime,
        batch_sizes=[args.batch_size],
        workers=bench.worker_counts(args.max_workers),
        executors=[args.executor],
        model=args.model,
        limit=args.limit,
        rounds=args.rounds,
        on_point=show,
    )
    machine = machine_info(dsn) if args.json or args.save else {}
    if args.save:
        try:
            bench.save(args.save, points, machine)
        except (OSError, ValueError, TypeError, KeyError) as exc:  # unwritable, or not a file of ours to merge into
            raise ConfigError(f"cannot save to {args.save!r}: {one_line(exc)}") from None
    if args.json:
        ratios = bench.speedups(points)
        rows = [{**dataclasses.asdict(p), "speedup": round(ratios.get(p, 0.0), 3)} for p in points]
        print(json.dumps({"machine": machine, "points": rows}))
    return 0
