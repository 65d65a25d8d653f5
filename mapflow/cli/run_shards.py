"""``mapflow merge RUN`` and ``mapflow show RUN``: a run directory of shards (``mapflow run ... --shard I/N``)."""

from __future__ import annotations

import argparse

from ..inputs.checks import user_path


def add_merge_parser(sub) -> None:
    merge = sub.add_parser(
        "merge",
        help="join the shards of a run (mapflow run ... --out RUN --shard I/N) into one dataset, in the run's "
        "sample order; refuses an incomplete run unless --partial",
    )
    merge.add_argument("run", type=user_path, help="the run directory the shards share (their --out)")
    merge.add_argument("--out", type=user_path, help="write the merged dataset to this zarr store")
    merge.add_argument(
        "--partial",
        action="store_true",
        help="merge what is there: the committed samples of every shard that can be read",
    )
    merge.add_argument("--overwrite", action="store_true", help="replace an existing --out store")
    merge.set_defaults(func=cmd_merge)


def cmd_merge(args: argparse.Namespace) -> int:
    from ..results.shards import PROVENANCE_KEY, merge_run, run_status

    status = run_status(args.run)
    print(status.describe())
    merged = merge_run(args.run, args.out, partial=args.partial, overwrite=args.overwrite)
    if args.out is None:
        print(merged)
        return 0
    from ..results.store import open_dataset

    dataset = open_dataset(merged)
    partial = dataset.attrs[PROVENANCE_KEY]["shards"]["partial"]
    print(
        f"merged {dataset.sizes.get('sample', 0)} sample(s) of {status.count} shard(s) -> {merged}"
        + (" (partial)" if partial else "")
    )
    return 0


def show_run(run) -> int:
    """`mapflow show` of a run directory: each shard's state and failed samples."""
    from ..results.shards import run_status

    status = run_status(run)
    print(status.describe())
    for shard in status.shards:
        for sample_id, info in shard.failed.items():
            print(f"failed {sample_id} ({info['task']}, shard {shard.index}): {info['reason']}")
    return 0


def verify_run(run, *, repair: bool = False) -> int:
    """`mapflow verify` of a run directory: every shard store that exists, as `verify_store` checks one store."""
    from ..results.shards import MISSING, run_status
    from ..results.store import verify_store

    damaged = 0
    for shard in run_status(run).shards:
        if shard.state == MISSING:
            print(f"shard {shard.index}/{shard.count}: missing ({shard.path})")
            continue
        report = verify_store(shard.path, repair=repair)
        print(report.describe())
        damaged += not (report.ok or report.repaired)
    return 1 if damaged else 0
