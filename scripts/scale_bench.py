"""Measure a run on Dask workers against one process (issue 25, item 4).

One 50-sample information_flow run on the embedded organism (10 samples per task), measured
  1. in this process (`mapflow.run`): the reference dataset;
  2. on a local Dask cluster of 1 worker and of 2 workers (`mapflow.scale.dask_executor.run_on_dask`): wall times and
     their ratio, each merged run checked bit for bit against the reference;
  3. on 2 workers with one worker SIGKILLed (by its pid) while its shard is half stored: the run completes, the
     killed shard resumes, and the merged run is again bit for bit the reference.
Each Dask time is split into starting the cluster, the workers' imports and model load (every worker loads the model
once, before any shard) and measuring. Prints a table and one JSON line.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/scale_bench.py [--limit 10] [--study information_flow]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import xarray as xr

import mapflow as mf
from mapflow.results.integrity import PROVENANCE_KEY
from mapflow.results.shards import shard_store_path
from mapflow.results.store import ResultStore
from mapflow.scale.dask_executor import load_model_on_every_worker, run_on_dask

# provenance that differs between any two runs of one study (when, where, which process) or names the shards
VOLATILE = ("created", "runtime", "shard", "shards")


def bitwise_differences(merged: xr.Dataset, single: xr.Dataset) -> list[str]:
    """Every variable and coordinate with the same dims, dtype and bytes (object arrays: the same items, in order);
    the attributes equal, provenance but for `VOLATILE`. The names of what differs."""
    found = []
    names = set(merged.variables) | set(single.variables)
    for name in sorted(names):
        if name not in merged.variables or name not in single.variables:
            found.append(f"{name}: only in one")
            continue
        a, b = merged[name].variable, single[name].variable
        if a.dims != b.dims or a.dtype != b.dtype or a.shape != b.shape:
            found.append(f"{name}: dims/dtype/shape {a.dims} {a.dtype} {a.shape} vs {b.dims} {b.dtype} {b.shape}")
        elif a.dtype == object:
            if a.values.tolist() != b.values.tolist():
                found.append(f"{name}: items differ")
        elif np.ascontiguousarray(a.values).tobytes() != np.ascontiguousarray(b.values).tobytes():
            found.append(f"{name}: bytes differ")

    def stable(attrs: dict) -> dict:
        return {**attrs, PROVENANCE_KEY: {k: v for k, v in attrs[PROVENANCE_KEY].items() if k not in VOLATILE}}

    if stable(merged.attrs) != stable(single.attrs):
        found.append("attributes")
    return found


def say(text: str) -> None:
    print(f"[scale_bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def committed(store: Path) -> int:
    try:
        return ResultStore(store).committed_count
    except Exception:  # not created yet, or mid-creation: none stored
        return 0


def dask_run(study: str, run_dir: Path, workers: int, settings: dict, *, kill_mid_shard: bool = False) -> dict:
    """One run on a local cluster of ``workers``: its phase times, and with ``kill_mid_shard`` what was killed."""
    marks: dict = {"start": time.perf_counter()}
    killed: dict = {}

    def on_cluster(client):
        marks["cluster_up"] = time.perf_counter()
        load_model_on_every_worker(client)  # imports and the model, once per worker (the cache run_shard reads)
        marks["workers_ready"] = time.perf_counter()
        if kill_mid_shard:
            threading.Thread(target=kill_a_worker_mid_shard, args=(client, run_dir, killed), daemon=True).start()

    outcome = run_on_dask(study, out=run_dir, workers=workers, progress=False, on_cluster=on_cluster, **settings)
    end = marks["start"] + outcome.seconds
    return {
        "workers": workers,
        "shards": outcome.shards,
        "total_s": outcome.seconds,
        "cluster_start_s": marks["cluster_up"] - marks["start"],
        "workers_load_s": marks["workers_ready"] - marks["cluster_up"],
        "measure_s": end - marks["workers_ready"],
        "killed": killed or None,
        "resumed_shard": outcome.shard_counts[killed["shard"]] if killed else None,
    }


def kill_a_worker_mid_shard(client, run_dir: Path, killed: dict) -> None:
    """SIGKILL the worker process running a shard that has stored some but not all of its samples."""
    pids = client.run(os.getpid)
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        for address, keys in client.processing().items():
            for key in keys:
                match = re.match(r"mapflow-shard-(\d+)-of-(\d+)-", key)
                index, count = int(match.group(1)), int(match.group(2))
                store = shard_store_path(run_dir, index, count)
                stored = committed(store)
                if stored < 1:
                    continue
                run_size = len(ResultStore(store).provenance["shard"]["run_samples"])
                if stored < len(range(index, run_size, count)):
                    os.kill(pids[address], signal.SIGKILL)
                    killed.update(shard=index, stored_before_kill=stored, pid=pids[address], at=time.perf_counter())
                    return
        time.sleep(0.05)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="information_flow")
    parser.add_argument("--limit", type=int, default=10, help="samples per task (5 tasks: 10 -> 50 samples)")
    parser.add_argument("--out-dir", help="keep the stores here (default: a temporary directory)")
    args = parser.parse_args(argv)
    settings = {"limit": args.limit, "threads": 1}  # one thread per process: the workers share the cores
    with tempfile.TemporaryDirectory(prefix="mapflow-scale-bench-") as scratch:
        root = Path(args.out_dir or scratch)
        root.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        single = mf.run(args.study, out=root / "single.zarr", progress=False, **settings).load()
        single_s = time.perf_counter() - started
        results = {"study": args.study, "samples": int(single.sizes["sample"]), "single_process_s": single_s}
        results["cpus"] = os.cpu_count()
        results["load_average_before"] = os.getloadavg()
        say(f"single process: {single_s:.1f}s")
        for workers in (1, 2):
            run = dask_run(args.study, root / f"workers-{workers}", workers, settings)
            run["differences"] = bitwise_differences(mf.open_dataset(root / f"workers-{workers}").load(), single)
            results[f"workers_{workers}"] = run
            say(f"{workers} worker(s): {run['total_s']:.1f}s")
        killed = dask_run(args.study, root / "killed", 2, settings, kill_mid_shard=True)
        killed["differences"] = bitwise_differences(mf.open_dataset(root / "killed").load(), single)
        results["workers_2_one_killed"] = killed
        results["load_average_after"] = os.getloadavg()
    one, two = results["workers_1"], results["workers_2"]
    results["ratio_total"] = one["total_s"] / two["total_s"]
    results["ratio_measure"] = one["measure_s"] / two["measure_s"]
    print(report(results))
    print(json.dumps(results, default=str))
    same = not any(results[k]["differences"] for k in ("workers_1", "workers_2", "workers_2_one_killed"))
    return 0 if same and killed["killed"] else 1


def report(results: dict) -> str:
    lines = [
        f"{results['study']}, {results['samples']} samples on the organism; {results['cpus']} CPUs, load average "
        f"{results['load_average_before'][0]:.1f} before, {results['load_average_after'][0]:.1f} after",
        f"single process (mapflow.run, model already imported): {results['single_process_s']:.1f}s",
        f"{'run':<24}{'shards':>7}{'total':>9}{'cluster':>9}{'load':>8}{'measure':>9}  merged == single, bitwise",
    ]
    for key in ("workers_1", "workers_2", "workers_2_one_killed"):
        run = results[key]
        lines.append(
            f"{key:<24}{run['shards']:>7}{run['total_s']:>8.1f}s{run['cluster_start_s']:>8.1f}s"
            f"{run['workers_load_s']:>7.1f}s{run['measure_s']:>8.1f}s  "
            + ("yes" if not run["differences"] else f"NO: {run['differences']}")
        )
    killed = results["workers_2_one_killed"]
    if killed["killed"]:
        lines.append(
            f"killed: worker pid {killed['killed']['pid']} (SIGKILL) running shard {killed['killed']['shard']} after "
            f"{killed['killed']['stored_before_kill']} of its samples were stored; on its re-run the shard skipped "
            f"{killed['resumed_shard']['skipped']} and measured {killed['resumed_shard']['done']}"
        )
    else:
        lines.append("killed: no worker was killed mid-shard (the run finished first)")
    lines.append(
        f"1 worker / 2 workers: {results['ratio_total']:.2f}x end to end, {results['ratio_measure']:.2f}x measuring"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
