"""Map a study over samples and append each sample's result to a zarr store as soon as it is done."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
import xarray as xr

from ..backends import Backend, LocalBackend, choose_backend
from ..data.sample import Sample
from ..data.video import read_frames
from ..errors import MapflowError, RunInterrupted
from ..inputs import checks as inputs
from ..inputs.prompts import TEMPLATES, build_prompt
from ..models.base import VideoLLMAdapter
from ..results.store import ResultStore
from .catalog import STUDIES_PACKAGE, available_studies, check_screenable, load_study  # noqa: F401  (public here)
from .context import StudyConfig, StudyContext
from .inflight import in_order
from .interrupts import stops_cleanly
from .progress import tqdm
from .shards import as_shard

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    out: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        text = (
            f"{len(self.done)} sample(s) measured, {len(self.skipped)} already in the store, "
            f"{len(self.failed)} failed -> {self.out}"
        )
        for sample_id, reason in list(self.failed.items())[:5]:
            text += f"\n  failed {sample_id}: {reason}"
        return text


def measure_sample(
    study: ModuleType, adapter: VideoLLMAdapter, sample: Sample, config: StudyConfig, model_name: str, backend=None
) -> xr.Dataset:
    """Run the study on one sample; the result gets the leading ``sample`` dim and its ``task``/``model`` labels."""
    inputs.check_option_letters(sample)
    prompt = build_prompt(sample, TEMPLATES[config.prompt_template])
    video = read_frames(sample, num_frames=config.num_frames, rule=config.frame_rule)
    frames = video.frames
    timestamps = video.indices / video.fps
    prepared = adapter.prepare(
        frames,
        prompt.segments,
        option_letters=prompt.option_letters,
        true_letter=prompt.true_letter,
        non_option_includes_prefix=config.non_option_includes_prefix,
        timestamps=timestamps,
    )
    inputs.check_prompt_fits(adapter, prepared, sample)
    result = study.run(
        StudyContext(
            adapter=adapter,
            sample=sample,
            prepared=prepared,
            config=config,
            prompt=prompt,
            frames=frames,
            timestamps=timestamps,
            backend=backend or LocalBackend(),
        )
    )
    inputs.check_study_result(study, result)
    result = result.expand_dims(sample=[sample.sample_id])
    return result.assign_coords(task=("sample", np.asarray([sample.task], dtype=object)), model=model_name)


@stops_cleanly
def run_study(
    study: ModuleType,
    adapter: VideoLLMAdapter,
    samples: list[Sample],
    out,
    *,
    config: StudyConfig,
    provenance: dict,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    backend: Backend | None = None,
    remote=None,
    bad_entries=(),
    concurrency: int | None = None,
    shard=None,
) -> RunSummary:
    """Measure every sample not yet in ``out``; a failing sample is recorded with its reason and the run goes on.

    ``backend``: where the traces run (`mapflow.backends`; default this process). ``remote`` (True or a
    `mapflow.remote.RemoteSettings`) and ``concurrency`` are the shorthand for an `NDIFBackend`, chosen by
    `mapflow.backends.choose_backend`. A remote run is checked before the first sample; each finished sample is
    stored at once, so a server failure loses nothing and a re-run resumes. Whatever the backend keeps in flight,
    the store gets the samples in sample order.
    ``bad_entries``: annotation entries that failed validation (`mapflow.data.loading.BadEntry`), recorded as failed.
    ``shard``: ``(index, count)`` or ``"I/N"`` (`mapflow.analysis.shards`): measure only that part of ``samples``
    into its own store inside the run directory ``out`` (`mapflow.results.shards`); merge the shards afterwards.
    """
    from .resolve import resolve_config

    shard = as_shard(shard)  # a shard that cannot be is refused before anything runs
    backend = choose_backend(backend, remote=remote, concurrency=concurrency)
    config = resolve_config(config, adapter, samples)
    if isinstance(provenance.get("config"), dict):
        provenance = {**provenance, "config": {**provenance["config"], "prompt_template": config.prompt_template}}
    from ..knockout.planner import check_heads

    check_screenable(study, provenance["study"], config.plan)  # a plan the backend cannot run: its prepare refuses
    check_heads(config.heads, adapter.num_heads)  # before any sample: every one would fail the same way
    adapter, config = backend.prepare(study, adapter, config)
    if backend.describe():
        provenance = {**provenance, "runtime": {**provenance.get("runtime", {}), **backend.describe()}}
    if shard is not None:
        samples, out, provenance, bad_entries = _shard_part(samples, out, provenance, bad_entries, shard)
    else:
        _refuse_run_dir(out)
    store = ResultStore.create_or_resume(out, provenance, resume=resume, overwrite=overwrite)
    summary = RunSummary(out=Path(out))
    completed = store.completed_sample_ids()
    _record_bad_entries(store, bad_entries, completed, summary)
    model_name = provenance["model"]["name"]
    part = f" shard {shard}" if shard is not None else ""
    bar = tqdm(samples, desc=f"{provenance['study']}{part}", unit="sample", disable=not progress)
    pending = [sample for sample in samples if sample.sample_id not in completed]
    summary.skipped = [sample.sample_id for sample in samples if sample.sample_id in completed]
    bar.update(len(summary.skipped))
    # up to `backend.concurrency` samples in flight (remote runs), their outcomes handled in sample order
    outcomes = in_order(
        pending,
        lambda s: measure_sample(study, adapter, s, config, model_name, backend),
        backend.concurrency,
        catch=(Exception,),
        cancel=backend.cancel,
    )
    try:
        for sample, result in outcomes:
            bar.update(1)
            bar.set_postfix_str(sample.sample_id)
            if isinstance(result, RunInterrupted):  # e.g. the server went away: later samples would fail the same
                raise result.at_sample(sample.sample_id)
            if isinstance(result, MemoryError):  # the machine, not the sample: later samples would fail too
                raise result
            if isinstance(result, BaseException):  # anything a sample raises (a study's ZeroDivisionError too)
                reason = f"{type(result).__name__}: {result}"
                log.warning("sample %s failed: %s", sample.sample_id, reason)
                store.record_failure(sample.sample_id, sample.task, reason)
                summary.failed[sample.sample_id] = reason
                continue
            store.append(result)
            summary.done.append(sample.sample_id)
    finally:
        outcomes.close()
        bar.close()
    return summary


def _shard_part(samples, run_dir, provenance: dict, bad_entries, shard):
    """(the shard's samples, its store, its provenance, its bad entries): the shard's part of the run, checked
    against the sibling shards already in ``run_dir``."""
    from ..results.shards import prepare_shard_store, shard_provenance
    from .shards import select_shard

    run_samples = [sample.sample_id for sample in samples]
    provenance = shard_provenance(provenance, shard.index, shard.count, run_samples)
    store = prepare_shard_store(run_dir, provenance)
    return select_shard(samples, shard), store, provenance, (bad_entries if shard.index == 0 else ())


def _refuse_run_dir(out) -> None:
    from ..results.shards import is_run_dir

    if is_run_dir(out):
        raise MapflowError(
            f"{out} holds the shards of a run: pass --shard I/N (shard=(i, n)) to run one, `mapflow merge {out}` "
            "to merge them, or choose another --out"
        )


def _record_bad_entries(store: ResultStore, bad_entries, completed: set[str], summary: RunSummary) -> None:
    """Bad annotation entries become failed samples, written once: a resumed run finds them recorded and unchanged."""
    recorded = store.failed_samples()
    for entry in bad_entries:
        if entry.sample_id in completed:
            continue
        if recorded.get(entry.sample_id) != {"task": entry.task, "reason": entry.reason}:
            store.record_failure(entry.sample_id, entry.task, entry.reason)
        summary.failed[entry.sample_id] = entry.reason
