"""One run over many worker processes (and machines) with Dask: each Dask task is one shard of the run.

The run is split into shards (`mapflow run --shard I/N`: each its own store in the run directory, own lock, resumed
where it stopped); a Dask task runs one shard with the worker's model, loaded once per worker process. Dask does the
scheduling: a worker that dies has its task re-run on another worker, which resumes that shard's store (the sample
that was in flight is measured again, stored once). The merged run is what `mapflow.open_dataset(RUN)` gives.

Not a `mapflow.backends.Backend`: a backend runs one process's samples and its runner writes one store, so killed
workers would need the driver to hold every result; a shard is the unit that already resumes, locks and merges.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MapflowError
from .shard_progress import samples_done

log = logging.getLogger(__name__)

# more shards than workers: a slow worker takes fewer of them, and the shard of a killed worker, re-run and resumed
# elsewhere, is a small part of the run
SHARDS_PER_WORKER = 4
POLL_SECONDS = 0.5
# the settings that choose how a worker loads the model (`mf.load_model`); the rest go to `mf.run` unchanged
LOAD_SETTINGS = {"attn": "attn_implementation", "dtype": "dtype", "device": "device", "device_map": "device_map"}

_WORKER_MODELS: dict[tuple, object] = {}  # per worker process: (checkpoint, load options) -> loaded model


@dataclass
class ClusterRun:
    """What a run on the cluster did: where the run directory is, how it was split, on how many workers."""

    out: Path
    shards: int
    workers: int
    seconds: float
    shard_counts: dict[int, dict] = field(default_factory=dict)  # shard index -> its done, skipped, failed

    @property
    def failed(self) -> dict[str, str]:
        return {sample: reason for counts in self.shard_counts.values() for sample, reason in counts["failed"].items()}

    def describe(self) -> str:
        done = sum(counts["done"] for counts in self.shard_counts.values())
        skipped = sum(counts["skipped"] for counts in self.shard_counts.values())
        text = (
            f"{done} sample(s) measured, {skipped} already stored, {len(self.failed)} failed, in {self.shards} "
            f"shards on {self.workers} Dask worker(s), {self.seconds:.1f}s -> {self.out} "
            f"(mapflow merge {self.out}, or mapflow.open_dataset)"
        )
        for sample_id, reason in list(self.failed.items())[:5]:
            text += f"\n  failed {sample_id}: {reason}"
        return text


def worker_model(model, load_options: dict):
    """The model this worker process measures with: loaded on first use, then reused by every shard it runs."""
    import mapflow as mf

    key = (str(model) if model is not None else None, tuple(sorted(load_options.items())))
    if key not in _WORKER_MODELS:
        _WORKER_MODELS[key] = mf.load_model(model, **load_options)
    return _WORKER_MODELS[key]


def load_model_on_every_worker(client, model=None, load_options: dict | None = None) -> None:
    """Load the model into each worker's cache now (as tasks, not on the workers' event loops), e.g. to time the
    measuring alone; a run does the same on each worker's first shard."""
    addresses = list(client.scheduler_info(n_workers=-1)["workers"])
    client.gather([client.submit(_load_model, model, load_options or {}, workers=[a], pure=False) for a in addresses])


def _load_model(model, load_options: dict) -> None:
    worker_model(model, load_options)  # the model stays in the worker: only None travels back


def run_shard(study, model, data, run_dir: str, index: int, count: int, load_options: dict, config: dict) -> dict:
    """One Dask task: shard ``index`` of ``count`` into ``run_dir`` (resumed if it has started), as `mapflow.run`
    resolves it; returns its counts (a shard whose samples all fail is reported, not raised: the others go on)."""
    from ..analysis.resolve import prepare_run
    from ..analysis.runner import run_study

    prepared = prepare_run(study, worker_model(model, load_options), data, **config)
    summary = run_study(
        prepared.study,
        prepared.adapter,
        prepared.samples,
        run_dir,
        config=prepared.config,
        provenance=prepared.provenance,
        progress=False,
        bad_entries=getattr(prepared.samples, "bad_entries", ()),
        shard=(index, count),
    )
    return {"done": len(summary.done), "skipped": len(summary.skipped), "failed": dict(summary.failed)}


def start_local_cluster(workers: int | None, *, device: str = "cpu", quiet: bool = True):
    """A cluster of worker processes on this machine, one thread each (one model per process).

    On a CUDA device every worker gets one GPU through its own ``CUDA_VISIBLE_DEVICES`` (so ``cuda`` inside it is
    that GPU): one worker per GPU by default, round-robin when more workers are asked for than there are GPUs."""
    from distributed import LocalCluster, Nanny, Scheduler, SpecCluster

    silence = logging.ERROR if quiet else logging.WARNING
    if not str(device).startswith("cuda"):
        if workers is None or workers < 1:
            raise MapflowError(f"workers={workers!r}: a local cluster needs at least one worker (--workers K)")
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=silence,
        )
    if device not in ("cuda", "cuda:0"):
        raise MapflowError(
            f"device {device!r} with local Dask workers: each worker sees one GPU as 'cuda' "
            "(its CUDA_VISIBLE_DEVICES); pass --device cuda"
        )
    import torch

    gpus = torch.cuda.device_count()
    if gpus == 0:
        raise MapflowError("--device cuda with --workers: no CUDA device is visible on this machine")
    count = gpus if workers is None else workers
    specs = {
        f"gpu-{i}": {
            "cls": Nanny,
            "options": {"nthreads": 1, "env": {"CUDA_VISIBLE_DEVICES": str(i % gpus)}, "silence_logs": silence},
        }
        for i in range(count)
    }
    return SpecCluster(
        workers=specs,
        scheduler={"cls": Scheduler, "options": {"dashboard_address": None}},
        silence_logs=silence,
    )


def run_on_dask(
    study,
    model=None,
    data=None,
    *,
    out,
    workers: int | None = None,
    scheduler: str | None = None,
    shards: int | None = None,
    progress: bool = True,
    on_cluster: Callable | None = None,
    **config,
) -> ClusterRun:
    """Run ``study`` split into shards over Dask workers into the run directory ``out``.

    ``workers``: start a local cluster of that many worker processes; or ``scheduler``: the address of a running
    Dask scheduler (``tcp://host:8786``; its workers need mapflow installed and ``out`` on a shared file system).
    ``shards``: how many parts (default: those of an existing run in ``out``, else 4 per worker). ``config``: the
    ``mapflow run`` settings (`mapflow.run_options`), ``attn``/``dtype``/``device``/``device_map`` among them choose
    how each worker loads the model. ``on_cluster(client)`` is called once the workers are up (tests and the
    benchmark use it to find worker pids). A re-run of the same command resumes every unfinished shard.
    """
    from distributed import Client

    if (workers is None) == (scheduler is None):
        raise MapflowError(
            "a Dask run takes one of --workers K (a local cluster) or --scheduler ADDRESS (workers=, scheduler=)"
        )
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise MapflowError("with Dask workers pass the checkpoint directory as model: each worker loads its own copy")
    run_dir = Path(out).expanduser().absolute()
    total = _sample_count(data, config)
    load_options = {LOAD_SETTINGS[k]: config[k] for k in LOAD_SETTINGS if config.get(k) is not None}
    run_config = {k: v for k, v in config.items() if k not in LOAD_SETTINGS}
    started = time.perf_counter()
    cluster = None
    if scheduler is None:
        cluster = start_local_cluster(workers, device=str(config.get("device") or "cpu"), quiet=True)
    try:
        with Client(cluster if cluster is not None else scheduler) as client:
            worker_count = len(client.scheduler_info(n_workers=-1)["workers"]) or (workers or 1)
            count = _shard_count(shards, run_dir, worker_count, total)
            if on_cluster is not None:
                on_cluster(client)
            run_key = hashlib.sha1(str(run_dir).encode()).hexdigest()[:12]  # two runs on one cluster never share keys
            futures = [
                client.submit(
                    run_shard,
                    study,
                    model,
                    data,
                    str(run_dir),
                    index,
                    count,
                    load_options,
                    run_config,
                    key=f"mapflow-shard-{index}-of-{count}-{run_key}",
                    pure=False,
                )
                for index in range(count)
            ]
            shard_counts = _wait(client, futures, run_dir, total, progress)
    finally:
        if cluster is not None:
            cluster.close()
    return ClusterRun(run_dir, count, worker_count, time.perf_counter() - started, shard_counts)


def _sample_count(data, config: dict) -> int:
    """The samples of the whole run, bad annotation entries included (each is recorded as a failed sample)."""
    import mapflow as mf

    from ..analysis.resolve import DEFAULT_BENCHMARK

    if isinstance(data, list):
        return len(data) + len(getattr(data, "bad_entries", ()))
    samples = mf.load_benchmark(
        config.get("benchmark") or DEFAULT_BENCHMARK,
        data,
        limit=config.get("limit"),
        tasks=config.get("tasks"),
        seed=config.get("seed", 42),
        strict=bool(config.get("strict")),
    )
    return len(samples) + len(samples.bad_entries)


def _shard_count(shards: int | None, run_dir: Path, workers: int, total: int) -> int:
    """The given count, else an existing run's (a resumed run keeps its split), else 4 per worker, at most one per
    sample (an empty shard would be a run of no samples)."""
    if shards is not None:
        if shards < 1:
            raise MapflowError(f"shards={shards}: a run is split into at least one shard")
        return shards
    existing = _existing_shard_count(run_dir)
    if existing is not None:
        return existing
    return max(1, min(SHARDS_PER_WORKER * workers, total))


def _existing_shard_count(run_dir: Path) -> int | None:
    from ..results.shards import shard_stores

    counts = {count for _, count in shard_stores(run_dir)}
    return counts.pop() if len(counts) == 1 else None  # several counts: the shard itself refuses, naming them


def _wait(client, futures, run_dir: Path, total: int, progress: bool) -> dict[int, dict]:
    """Wait for every shard, showing samples stored over all workers; the first shard that fails stops the run
    (the others are cancelled; their stores keep what they stored, and the same command resumes them)."""
    from ..analysis.progress import tqdm

    bar = tqdm(total=total, desc=f"{run_dir.name} on Dask", unit="sample", disable=not progress)
    try:
        while True:
            finished = [future for future in futures if future.done()]
            _show(bar, samples_done(run_dir))
            failed = next((future for future in finished if future.status != "finished"), None)
            if failed is not None:
                client.cancel([future for future in futures if not future.done()])
                _raise_shard_error(failed, run_dir)
            if len(finished) == len(futures):
                return {index: future.result() for index, future in enumerate(futures)}
            time.sleep(POLL_SECONDS)
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        bar.close()


def _show(bar, done: int) -> None:
    if done > bar.n:  # only on news: a redraw per poll floods a log that is no terminal
        bar.update(done - bar.n)


def _raise_shard_error(future, run_dir: Path):
    from distributed import KilledWorker

    if future.status == "cancelled":
        raise MapflowError(f"{future.key} was cancelled on the cluster; the same command resumes the run in {run_dir}")
    error = future.exception()
    if isinstance(error, KilledWorker):
        raise MapflowError(
            f"{future.key}: the workers running it died repeatedly ({error}); the shard stores in {run_dir} keep "
            "every stored sample, and the same command resumes them"
        ) from error
    raise error
