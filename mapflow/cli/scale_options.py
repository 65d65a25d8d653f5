"""``mapflow run --workers K | --scheduler ADDRESS``: the run split into shards executed by Dask workers
(`mapflow.scale.dask_executor`), into the run directory ``--out``."""

from __future__ import annotations

import argparse
import logging

from ..errors import MapflowError
from ..inputs.checks import user_path
from .option_values import parse_heads, parse_options

# `mapflow run` options whose value is not the `prepare_run` setting of the same name
_CONVERTED = {"option", "non_option_without_prefix", "heads", "threads"}


def add_scale_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scale out on Dask (pip install 'mapflow[scale]'; see docs/scale.md, Scale out)")
    group.add_argument(
        "--workers",
        type=int,
        metavar="K",
        help="start a local Dask cluster of K worker processes (one model each; with --device cuda one GPU each) "
        "and run the shards there; --out is then a run directory",
    )
    group.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the shards on an existing Dask cluster, e.g. tcp://host:8786 (its workers need mapflow and "
        "--out on a shared file system)",
    )
    group.add_argument(
        "--shards",
        type=int,
        metavar="N",
        help="with --workers/--scheduler: split the run into N shards (default: an existing run's count, else 4 "
        "per worker, so a killed worker loses little)",
    )


def run_with_executor(args) -> int | None:
    """Run ``mapflow run``'s arguments on Dask when ``--workers`` or ``--scheduler`` is given (its exit status);
    None otherwise (the run stays in this process)."""
    workers, scheduler = getattr(args, "workers", None), getattr(args, "scheduler", None)
    if workers is None and scheduler is None:
        if getattr(args, "shards", None) is not None:
            raise MapflowError("--shards N splits a run over Dask workers: give --workers K or --scheduler ADDRESS")
        return None
    _refuse_contradictions(args)
    try:
        import distributed  # noqa: F401  (importing it sets its loggers' levels: done before ours below)

        from ..scale.dask_executor import run_on_dask
    except ImportError as err:
        raise MapflowError(f"--workers/--scheduler need Dask: pip install 'mapflow[scale]' ({err})") from None
    if not getattr(args, "verbose", False):  # the in-process scheduler logs each worker's coming and going at INFO
        logging.getLogger("distributed").setLevel(logging.WARNING)
    study = str(user_path(args.study)) if args.study.endswith(".py") else args.study
    outcome = run_on_dask(
        study,
        args.model,
        args.data,
        out=args.out,
        workers=workers,
        scheduler=scheduler,
        shards=args.shards,
        progress=not args.no_progress,
        **run_settings(args),
    )
    print(outcome.describe())
    measured = any(counts["done"] or counts["skipped"] for counts in outcome.shard_counts.values())
    return 1 if outcome.failed and not measured else 0  # every sample failed


def run_settings(args) -> dict:
    """``mapflow run``'s arguments as `mapflow.run` settings (`mapflow.run_options`), converted as cmd_run does."""
    from ..api import run_options

    settings = {name: getattr(args, name) for name in run_options() if name not in _CONVERTED and hasattr(args, name)}
    settings["options"] = parse_options(args.option)
    settings["non_option_includes_prefix"] = not args.non_option_without_prefix
    settings["heads"] = parse_heads(args.heads)
    # tiny models run ~10x faster single-threaded on shared CPUs (cmd_run's rule), and a worker is one process of many
    settings["threads"] = args.threads if args.threads is not None else (None if args.model else 1)
    return settings


def _refuse_contradictions(args) -> None:
    if args.workers is not None and args.scheduler is not None:
        raise MapflowError("--workers K starts a local cluster, --scheduler ADDRESS joins one: give one of them")
    if args.workers is not None and args.workers < 1:
        raise MapflowError(f"--workers {args.workers}: at least one worker")
    if getattr(args, "shard", None):
        raise MapflowError("--shard I/N runs one shard here; --workers/--scheduler run every shard: give one of them")
    if getattr(args, "remote", False):
        raise MapflowError("--remote sends the traces to an NDIF server; --workers/--scheduler run them on Dask")
    if args.overwrite:
        raise MapflowError(
            f"--overwrite with --workers/--scheduler: delete the run directory {args.out} yourself "
            "(a re-run without it resumes every shard)"
        )
