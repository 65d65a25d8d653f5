"""The public Python API (``import mapflow as mf``): load a model and a benchmark, run a study, check a checkpoint.

`run` resolves a study run exactly as ``mapflow run`` does (`mapflow.analysis.resolve.prepare_run`: same options, same
defaults, same provenance), so a store written from a notebook resumes from the command line and back.
"""

from __future__ import annotations

import inspect
import tempfile
import warnings
from pathlib import Path

from .analysis.resolve import BenchmarkSamples, load_benchmark, prepare_run  # noqa: F401  (load_benchmark is public)
from .errors import MapflowError, ModelLoadError


def load_model(path=None, *, remote=False, backend=None, concurrency: int | None = None, **options):
    """A checkpoint directory (default: the embedded organism) behind mapflow's adapter interface.

    ``options`` go to `mapflow.models.load_adapter` (``attn_implementation``, ``dtype``, ``device``, ``device_map``,
    ``self_test``). ``remote``: True (settings from the environment, config file or the local stack) or a
    `mapflow.remote.RemoteSettings`, with ``concurrency`` (requests in flight, default 2), or ``backend``: a
    `mapflow.backends.Backend`. The model remembers it as ``model.backend`` and `run` sends its traces there when it
    is given no backend of its own; the model is still loaded here (its processor builds the inputs, its envoys name
    the modules).
    """
    from .backends import choose_backend
    from .embedded import default_model_dir
    from .models import load_adapter as load

    path = Path(path).expanduser() if path is not None else default_model_dir()
    if remote is True:  # resolved now: a missing host or model key is said at once, before the model loads
        from .remote import resolve_settings

        remote = resolve_settings(local_model_dir=path)
    given = backend is not None or bool(remote) or concurrency is not None
    remembered = choose_backend(backend, remote=remote, concurrency=concurrency) if given else None
    adapter = load(path, **options)
    adapter.backend = remembered
    return adapter


def run_options() -> tuple[str, ...]:
    """The keyword settings `run` takes: ``mapflow run``'s options, named as in `mapflow.analysis.resolve.prepare_run`."""
    parameters = inspect.signature(prepare_run).parameters.values()
    return tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


def run(
    study,
    model=None,
    data=None,
    out=None,
    *,
    backend=None,
    remote=None,
    concurrency: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    shard=None,
    **config,
):
    """Run ``study`` over ``data`` with ``model`` and return the results as an `xarray.Dataset`.

    ``study``: a function ``run(ctx) -> xarray.Dataset``, a module defining ``run``, a study name (`available_studies`)
    or a ``.py`` path. ``model``: None (the embedded organism), a checkpoint directory or `load_model`'s result.
    ``data``: None (the embedded benchmark), a benchmark root or `load_benchmark`'s result. ``out``: None keeps the
    results in memory; a ``.zarr`` path stores each sample as it finishes and resumes a store made with the same
    configuration. Where the traces run: ``backend`` (a `mapflow.backends.Backend`), or ``remote`` (True or a
    `mapflow.remote.RemoteSettings`: an NDIF server) with ``concurrency`` (requests in flight, default 2), as
    `mapflow.backends.choose_backend` decides; given none, the model's own ``backend`` from `load_model`, else this
    process. ``config``: the ``mapflow run`` options (`run_options`), e.g. ``window=3``, ``limit=2`` (samples per
    task), ``tasks=[...]``, ``template=...``, ``samples="all"``, ``options={...}``.
    ``shard``: ``(i, n)`` (0-based) measures only shard i of n of the samples (sample k goes to shard k mod n) into
    ``out``, a run directory the n shards share (``out/shards/i-of-n.zarr``); it returns that shard's samples.
    `open_dataset(out)` (or ``mapflow merge``) merges the shards into the dataset one process would have made.
    """
    from .analysis.runner import run_study
    from .backends import choose_backend
    from .results.store import open_dataset

    unknown = sorted(set(config) - set(run_options()))
    if unknown:
        raise MapflowError(f"unknown run setting(s) {', '.join(unknown)}; known: {', '.join(run_options())}")
    from .models.base import VideoLLMAdapter

    # else the model's own backend, if `load_model` gave it one
    placed = backend is not None or remote is not None or not isinstance(model, VideoLLMAdapter)
    if placed:
        backend = choose_backend(backend, remote=remote, concurrency=concurrency)  # contradictions refused at once
    from .analysis.shards import as_shard

    shard = as_shard(shard)  # a bad shard is refused before the model loads
    if shard is not None and out is None:
        raise MapflowError("shard= needs out=: the run directory that the shards share (e.g. out='runs/x')")
    if out is not None:
        from .inputs.checks import check_store_writable

        check_store_writable(Path(out).expanduser().absolute())  # before the model loads
    prepared = prepare_run(study, model, data, **config)
    if not placed:
        remembered = prepared.adapter.backend
        if remembered is not None and concurrency is not None:
            raise MapflowError(
                f"the model runs on {remembered!r} (from mf.load_model); its concurrency is that "
                "backend's: pass concurrency= to mf.load_model, or remote= / backend= here with it"
            )
        backend = remembered if remembered is not None else choose_backend(concurrency=concurrency)
    with tempfile.TemporaryDirectory(prefix="mapflow-run-") as scratch:
        store = Path(out) if out is not None else Path(scratch) / f"{prepared.study_name}.zarr"
        summary = run_study(
            prepared.study,
            prepared.adapter,
            prepared.samples,
            store,
            config=prepared.config,
            provenance=prepared.provenance,
            overwrite=overwrite,
            progress=progress,
            backend=backend,
            bad_entries=getattr(prepared.samples, "bad_entries", ()),
            shard=shard,
        )
        if not summary.done and not summary.skipped:
            reasons = "\n  ".join(f"{sample}: {reason}" for sample, reason in list(summary.failed.items())[:5])
            raise MapflowError(
                f"study {prepared.study_name}: no sample could be measured "
                f"({len(summary.failed)} failed)" + (f":\n  {reasons}" if reasons else " (the data has no samples)")
            )
        if summary.failed:
            warnings.warn(
                f"study {prepared.study_name}: {len(summary.failed)} sample(s) failed and are missing from "
                f"the results (first: {next(iter(summary.failed.items()))})",
                stacklevel=2,
            )
        ds = open_dataset(summary.out)  # a shard's own store
        return ds.load() if out is None else ds


def open_dataset(path, *, partial: bool = False):
    """A result store's dataset (lazily, read-only: exactly its committed samples), or a run directory of shards
    merged into the dataset one process would have made (`mapflow.results.shards.open_run`; an incomplete run is
    refused, naming the shards missing, unless ``partial``)."""
    from .results.shards import is_run_dir, open_run
    from .results.store import open_dataset as open_store

    return open_run(path, partial=partial) if is_run_dir(path) else open_store(path)


def prune_plan(stores=(), **options):
    """A pruning plan from knockout stores (paths or datasets of one model): the layer after which no measured route
    reads the video, by a stated rule and threshold (`mapflow.pruning.plan.prune_plan`: ``threshold``, ``rule``,
    ``frame_local``, ``drop_video_after``). ``.save(path)`` writes it for ``mapflow prune-eval``."""
    from .pruning.plan import prune_plan as derive

    return derive(stores, **options)


def prune_eval(plan, model=None, data=None, out=None, **options):
    """The plan (a `PrunePlan`, a plan.json path, a `PruneSpec`) against no pruning and FastV-style pruning on
    ``model`` and ``data`` (as `run`): per sample accuracy, agreement, prefill FLOPs and wall time, dims (sample,
    method) (`mapflow.pruning.evaluate.prune_eval`: ``limit``, ``tasks``, ``fastv_layers``, ``fastv_ratios``, ...)."""
    from .pruning.evaluate import prune_eval as evaluate

    return evaluate(plan, model, data, out=out, **options)


def available_studies() -> list[str]:
    """The names `run` accepts for the shipped studies (``mapflow.studies``)."""
    from .analysis.runner import available_studies as names

    return names()


def check(model=None, *, num_frames: int | None = None) -> dict:
    """The adapter's self-tests on a checkpoint, as a report: family, architecture, layers, prompt template, the
    token spans of a small synthetic clip, and whether an empty knockout reproduces the clean logits exactly and a
    real one (video -> last in every layer) changes them. ``report["ok"]`` says whether every test passed."""
    from .embedded import default_model_dir
    from .models import VideoLLMAdapter, self_test_input

    if isinstance(model, VideoLLMAdapter):
        adapter = model
    else:
        adapter = load_model(model if model is not None else default_model_dir(), self_test=False)
    report = {
        "path": str(adapter.path),
        "family": adapter.family,
        "architecture": type(adapter.hf_model).__name__,
        "layers": adapter.num_layers,
        "attn_implementation": adapter.attn_implementation,
        "prompt_template": adapter.prompt_template.name if adapter.prompt_template else None,
    }
    prepared = self_test_input(adapter, num_frames)
    layout = prepared.layout
    report["seq_len"] = layout.seq_len
    report["spans"] = {name: len(span) for name, span in layout.spans.items()}
    try:
        layout.validate()
        report.update(adapter.self_test(prepared))
        report["ok"] = True
    except (ModelLoadError, MapflowError) as err:
        report.update(ok=False, error=str(err))
    return report


def format_check(report: dict) -> str:
    """`check`'s report as lines for a terminal."""
    spans = report["spans"]
    frames = [name for name in spans if name.startswith("frame_")]
    other = {name: n for name, n in spans.items() if not name.startswith("frame_")}
    lines = [
        f"checkpoint      {report['path']}",
        f"family          {report['family']} ({report['architecture']}), {report['layers']} layers, "
        f"attention {report['attn_implementation']}",
        f"prompt template {report['prompt_template'] or '(none named; the benchmark decides)'}",
        f"input           {report['seq_len']} tokens; {len(frames)} frame spans of "
        f"{sorted({spans[f] for f in frames})} tokens",
        "spans           " + ", ".join(f"{name} {n}" for name, n in other.items()),
    ]
    if report["ok"]:
        lines += [
            f"empty knockout  exact (max |diff| {report['empty_knockout_max_abs_diff']:.3g})",
            f"knockout        changes the logits (video -> last, max |diff| "
            f"{report['video_to_last_max_abs_diff']:.3g})",
            "ok",
        ]
    else:
        lines.append(f"FAILED: {report['error']}")
    return "\n".join(lines)
