"""Studies on a real local NDIF server (stood up once for the session, torn down even when tests fail).

Needs the server environment (`make ndif-venv`, which `make test` builds) and redis-server. Without them the tests
skip with the reason, except under CI (CI=true), where a missing server is a failure, not a skip.
"""

import atexit
import os
import textwrap
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
import xarray as xr
from ndif_stacks import new_home, require_server_env

from mapflow.analysis.context import StudyConfig
from mapflow.analysis.runner import load_study, run_study
from mapflow.data.benchmarks import get_benchmark
from mapflow.embedded import default_data_dir, organism_dir
from mapflow.knockout.flows import Window
from mapflow.remote import (
    ModelNotDeployed,
    RemoteJobFailed,
    RemoteJobTimeout,
    ResultTooLarge,
    ServerUnreachable,
    resolve_settings,
)
from mapflow.results.store import ResultStore

# one local NDIF stack at a time, each stood up once: all stack tests run in one group on one xdist worker
pytestmark = [pytest.mark.server, pytest.mark.xdist_group("ndif_stack")]

TASKS = ["moving_direction", "object_count"]  # one sample each keeps the server tests to a couple of minutes
TOLERANCE = 1e-6


@pytest.fixture(scope="session")
def ndif_stack():
    from mapflow.ndif_local import stack

    require_server_env()
    reuse = os.environ.get("MAPFLOW_TEST_NDIF_HOME")  # a stack already up (`mapflow ndif up`), kept up afterwards
    if reuse and stack.running_stack_host(reuse):
        yield stack.StackState.load(stack.Path(reuse).expanduser().resolve())
        return
    home = new_home()
    atexit.register(stack.down, home)  # also covers an interpreter that dies outside the fixture's finally
    started = time.monotonic()
    try:
        state = stack.up(home, checkpoints=[organism_dir("video")], progress=lambda line: None)
        print(f"\nNDIF stack up in {time.monotonic() - started:.0f} s at {state.host}: {state.timings_s}")
        yield state
    finally:
        stack.down(home)


@pytest.fixture(scope="session")
def organism():
    from mapflow.models import load_adapter

    torch.set_num_threads(1)  # the server's actor runs single-threaded: same reduction order, same bits
    return load_adapter(organism_dir("video"))


@pytest.fixture(scope="session")
def samples():
    return get_benchmark("tvbench").loader(default_data_dir(), tasks=TASKS, limit=1, seed=0)


def settings_for(state, **overrides):
    return replace(resolve_settings(host=state.host, local_model_dir=organism_dir("video")), **overrides)


def provenance(study="cross_frame"):
    return {"study": study, "model": {"name": "organism-video"}, "config": {"study": study}}


CONFIG = StudyConfig(window=Window("center", 3), samples="all", prompt_template="organism_mcqa")


def run(study, adapter, samples, out, remote=None, config=CONFIG, concurrency=1):
    return run_study(
        load_study(study) if isinstance(study, str) else study,
        adapter,
        samples,
        out,
        config=config,
        provenance=provenance(),
        remote=remote,
        progress=False,
        concurrency=concurrency,
    )


@pytest.fixture(scope="session")
def more_samples():
    return get_benchmark("tvbench").loader(default_data_dir(), limit=1, seed=0)  # one per task


# a relative change (in %) divides a probability difference by the clean probability: its tolerance follows
RELATIVE = {"rel_change": ("p_knockout", "p_base"), "rel_change_gt": ("p_gt_knockout", "p_gt_base")}


def tolerance(local, name):
    """TOLERANCE on probabilities; for 100 (p - b) / b, the bound |d rel| <= 100 TOLERANCE (1 + p / b) / b."""
    if name not in RELATIVE:
        return TOLERANCE
    p, b = (local[n] for n in RELATIVE[name])
    return (100 * TOLERANCE * (1 + abs(p) / b) / b).broadcast_like(local[name]).transpose(*local[name].dims).values


def assert_same_results(remote_store, local_store, names=None):
    remote, local = xr.open_zarr(remote_store).load(), xr.open_zarr(local_store).load()
    assert list(remote.sample.values) == list(local.sample.values)
    assert remote.knocked_out.values.all()  # every sample was knocked out: the comparison covers real cells
    for name in names or local.data_vars:
        a, b = remote[name].values, local[name].values
        if a.dtype.kind == "f":
            assert np.array_equal(np.isnan(a), np.isnan(b)), name
            assert (np.nan_to_num(np.abs(a - b)) <= tolerance(local, name)).all(), name
        else:
            assert np.array_equal(a, b), name


@pytest.mark.parametrize("study", ["cross_frame", "information_flow"])
def test_remote_study_matches_the_local_run(study, ndif_stack, organism, samples, tmp_path, monkeypatch):
    """The sample plan (default): one request per sample, equal to the local fast plan, the local naive plan and the
    per-trace remote plan (the naive plan, one request per cell) within float32 rounding."""
    from mapflow.remote.client import PollingBackend

    submitted = []
    submit = PollingBackend.submit
    monkeypatch.setattr(PollingBackend, "submit", lambda self, tracer: (submitted.append(1), submit(self, tracer))[1])
    summary = run(study, organism, samples, tmp_path / "remote.zarr", remote=settings_for(ndif_stack))
    assert summary.failed == {} and len(summary.done) == len(samples)
    assert len(submitted) == len(samples)  # one request per sample, counted where the client submits jobs
    # the per-trace remote plan computes what the local naive plan computes: every variable agrees
    submitted.clear()
    run(study, organism, samples, tmp_path / "remote-trace.zarr", remote=settings_for(ndif_stack, plan="trace"))
    cells = xr.open_zarr(tmp_path / "remote-trace.zarr").p_knockout.isel(sample=0).size
    assert len(submitted) == len(samples) * (1 + cells)  # the old cost: a clean forward plus one per (flow, layer)
    run(study, organism, samples, tmp_path / "local-naive.zarr", config=replace(CONFIG, plan="naive"))
    assert_same_results(tmp_path / "remote-trace.zarr", tmp_path / "local-naive.zarr")
    run(study, organism, samples, tmp_path / "local.zarr")
    for reference in ("local.zarr", "local-naive.zarr", "remote-trace.zarr"):
        assert_same_results(tmp_path / "remote.zarr", tmp_path / reference)
    stored = xr.open_zarr(tmp_path / "remote.zarr").attrs
    assert ndif_stack.host in str(stored) and '"plan": "sample"' in str(stored).replace("'", '"')


@pytest.mark.parametrize(
    "study,options",
    [
        ("answer_probability", {}),
        ("logit_lens", {"keywords": "organism"}),
        ("attention_maps", {"max_queries": "3"}),
        # the layers the 7B preset, scaled, used to give the 8-layer organism (presets are no longer scaled)
        ("effective_pathway", {"ranges": "cross_frame=1-4;video_question=1-5;question_last=4-6"}),
        ("cross_frame_halves", {"generate": "2"}),
    ],
)
def test_readout_and_pathway_studies_run_remotely_unchanged(
    study, options, ndif_stack, organism, samples, tmp_path, monkeypatch
):
    """Logit lens, attention rows (.source), per-layer masks and generation serialize and give the local numbers;
    effective_pathway's five forwards (masks as bits), answer_probability's and logit_lens' two are one request."""
    from mapflow.remote.client import PollingBackend

    submitted = []
    submit = PollingBackend.submit
    monkeypatch.setattr(PollingBackend, "submit", lambda self, tracer: (submitted.append(1), submit(self, tracer))[1])
    config = replace(CONFIG, options=options)
    summary = run(
        study, organism, samples[:1], tmp_path / "remote.zarr", remote=settings_for(ndif_stack), config=config
    )
    assert summary.failed == {} and len(summary.done) == 1
    if study in ("effective_pathway", "answer_probability", "logit_lens"):
        assert len(submitted) == 1
    run(study, organism, samples[:1], tmp_path / "local.zarr", config=replace(config, plan="naive"))
    remote, local = xr.open_zarr(tmp_path / "remote.zarr").load(), xr.open_zarr(tmp_path / "local.zarr").load()
    for name in local.data_vars:
        a, b = remote[name].values, local[name].values
        if a.dtype.kind == "f":
            assert np.nanmax(np.abs(a - b), initial=0.0) <= TOLERANCE, name
        else:
            assert np.array_equal(a, b), name


def test_cli_remote_run_matches_local(ndif_stack, tmp_path, monkeypatch):
    from mapflow.cli import main

    monkeypatch.setenv("MAPFLOW_NDIF_HOST", ndif_stack.host)  # the host from the environment
    common = [
        "run",
        "cross_frame",
        "--model",
        str(organism_dir("video")),
        "--window",
        "3",
        "--limit",
        "1",
        "--tasks",
        TASKS[0],
        "--samples",
        "all",
        "--threads",
        "1",
        "--no-progress",
    ]
    assert main([*common, "--out", str(tmp_path / "local.zarr"), "--plan", "naive"]) == 0
    assert main([*common, "--out", str(tmp_path / "remote.zarr"), "--remote"]) == 0
    assert_same_results(tmp_path / "remote.zarr", tmp_path / "local.zarr")


def test_model_not_deployed_fails_before_any_sample(ndif_stack, organism, samples, tmp_path):
    other = organism_dir("frames")  # a real checkpoint, but the server never deployed it
    settings = resolve_settings(host=ndif_stack.host, model=str(other))
    with pytest.raises(ModelNotDeployed) as caught:
        run("cross_frame", organism, samples, tmp_path / "out.zarr", remote=settings)
    assert ndif_stack.host in str(caught.value) and str(other.resolve()) in str(caught.value)
    assert not (tmp_path / "out.zarr").exists()


def write_study(tmp_path, name, body):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return load_study(str(path))


def assert_recorded_failure(summary, out, samples, error_type, *fragments):
    assert set(summary.failed) == {s.sample_id for s in samples}
    store = ResultStore(out)
    assert store.committed_count == 0 and store.completed_sample_ids() == set()  # nothing partial was stored
    for info in store.failed_samples().values():
        assert info["reason"].startswith(error_type.__name__)
        for fragment in fragments:
            assert fragment in info["reason"], (fragment, info["reason"])


def test_job_that_raises_on_the_server_is_recorded_with_its_traceback(ndif_stack, organism, samples, tmp_path):
    study = write_study(
        tmp_path,
        "raises_remotely",
        """
        import torch
        import xarray as xr

        def run(ctx):
            with ctx.trace():
                product = (torch.zeros(2) @ torch.zeros(3)).save()  # runs on the server only
            return xr.Dataset({"value": ((), float(product.sum()))})
    """,
    )
    settings = settings_for(ndif_stack)
    summary = run(study, organism, samples, tmp_path / "out.zarr", remote=settings)
    assert_recorded_failure(
        summary,
        tmp_path / "out.zarr",
        samples,
        RemoteJobFailed,
        ndif_stack.host,
        settings.model_label,
        "raised on the server",
        "inconsistent tensor size",
    )


def test_job_past_its_time_limit_is_recorded_as_timed_out(ndif_stack, organism, samples, tmp_path):
    study = write_study(
        tmp_path,
        "slow_remotely",
        """
        import time
        import xarray as xr

        def run(ctx):
            with ctx.trace():
                time.sleep(3)
                logits = ctx.adapter.lm_head.output.save()
            return xr.Dataset({"value": ((), float(logits.sum()))})
    """,
    )
    settings = settings_for(ndif_stack, timeout_s=0.5)
    summary = run(study, organism, samples[:1], tmp_path / "out.zarr", remote=settings)
    assert_recorded_failure(
        summary,
        tmp_path / "out.zarr",
        samples[:1],
        RemoteJobTimeout,
        ndif_stack.host,
        settings.model_label,
        "within 0.5 s",
    )


def test_result_over_the_limit_is_recorded_as_too_large(ndif_stack, organism, samples, tmp_path):
    settings = settings_for(ndif_stack, max_result_mb=0.0002)  # 210 bytes: less than any pickled result, even the
    # sample plan's ~1 KiB of readouts
    summary = run("cross_frame", organism, samples, tmp_path / "out.zarr", remote=settings)
    assert_recorded_failure(
        summary,
        tmp_path / "out.zarr",
        samples,
        ResultTooLarge,
        ndif_stack.host,
        settings.model_label,
        "limit is 0.0002 MiB",
    )


def test_a_plain_request_between_two_of_ours_sees_the_unmodified_model(ndif_stack, organism, samples, tmp_path):
    """Our sample requests switch the server model's attention to the suffix kernel only inside themselves: another
    client's plain trace before, between and after them finds the same attention implementation, no mapflow attention
    registered, and the same logits."""
    import nnsight

    from mapflow.analysis.runner import measure_sample
    from mapflow.knockout.suffix_attention import ATTENTION_NAME
    from mapflow.remote.client import remote_adapter

    settings = settings_for(ndif_stack)
    view = remote_adapter(organism, settings)
    prompt_frames = measure_sample.__globals__  # the runner's own input building, for one sample
    sample = samples[0]
    prompt = prompt_frames["build_prompt"](sample, prompt_frames["TEMPLATES"][CONFIG.prompt_template])
    frames = prompt_frames["read_frames"](sample, num_frames=CONFIG.num_frames, rule=CONFIG.frame_rule).frames
    prepared = organism.prepare(
        frames, prompt.segments, option_letters=prompt.option_letters, true_letter=prompt.true_letter
    )

    def plain_request():
        from transformers import AttentionInterface

        with view.trace(prepared):
            implementation = nnsight.save(view.hf_model.config.get_text_config()._attn_implementation)
            registered = nnsight.save(ATTENTION_NAME in AttentionInterface._global_mapping)
            logits = view.lm_head.output[0, -1].save()
        return implementation, registered, logits

    seen = [plain_request()]
    for round in range(2):
        summary = run("information_flow", organism, samples[:1], tmp_path / f"ours-{round}.zarr", remote=settings)
        assert summary.done == [sample.sample_id]
        seen.append(plain_request())
    implementation, registered, logits = seen[0]
    assert implementation != ATTENTION_NAME and registered is False
    for later in seen[1:]:
        assert later[0] == implementation and later[1] is False and torch.equal(later[2], logits)


def test_requests_in_flight_are_stored_in_sample_order(ndif_stack, organism, more_samples, tmp_path):
    summary = run(
        "information_flow",
        organism,
        more_samples,
        tmp_path / "remote.zarr",
        remote=settings_for(ndif_stack),
        concurrency=3,
    )
    ids = [s.sample_id for s in more_samples]
    assert summary.done == ids and summary.failed == {}
    assert list(xr.open_zarr(tmp_path / "remote.zarr").sample.values) == ids
    run("information_flow", organism, more_samples, tmp_path / "local.zarr")
    assert_same_results(tmp_path / "remote.zarr", tmp_path / "local.zarr")


def test_per_trace_studies_run_with_requests_in_flight(ndif_stack, organism, samples, tmp_path):
    """A study without a server-side form (logit lens: one request per trace) also runs two samples at a time."""
    config = replace(CONFIG, options={"keywords": "organism"})
    summary = run(
        "logit_lens",
        organism,
        samples,
        tmp_path / "remote.zarr",
        remote=settings_for(ndif_stack),
        config=config,
        concurrency=2,
    )
    assert summary.failed == {} and summary.done == [s.sample_id for s in samples]
    run("logit_lens", organism, samples, tmp_path / "local.zarr", config=replace(config, plan="naive"))
    remote, local = xr.open_zarr(tmp_path / "remote.zarr").load(), xr.open_zarr(tmp_path / "local.zarr").load()
    assert list(remote.sample.values) == list(local.sample.values)
    for name in local.data_vars:
        a, b = remote[name].values, local[name].values
        if a.dtype.kind == "f":
            assert np.nanmax(np.abs(a - b), initial=0.0) <= TOLERANCE, name
        else:
            assert np.array_equal(a, b), name


def test_timeout_of_one_request_in_flight_fails_that_sample_only(ndif_stack, organism, samples, tmp_path):
    slow = samples[0].sample_id
    study = write_study(
        tmp_path,
        "one_slow",
        f"""
        import time
        from mapflow.studies.cross_frame import run as cross_frame

        def run(ctx):
            if ctx.sample.sample_id == {slow!r}:
                with ctx.trace():
                    time.sleep(4)  # on the server, past the limit
                    logits = ctx.adapter.lm_head.output.save()
            return cross_frame(ctx)
    """,
    )
    settings = settings_for(ndif_stack, timeout_s=2.0)
    summary = run(study, organism, samples, tmp_path / "out.zarr", remote=settings, concurrency=2)
    assert list(summary.failed) == [slow] and summary.done == [s.sample_id for s in samples[1:]]
    reason = ResultStore(tmp_path / "out.zarr").failed_samples()[slow]["reason"]
    assert reason.startswith("RemoteJobTimeout") and ndif_stack.host in reason and settings.model_label in reason
    # the same command resumes: the failed sample is measured again (now within the limit), the others are kept
    summary = run(
        "cross_frame", organism, samples, tmp_path / "out.zarr", remote=settings_for(ndif_stack), concurrency=2
    )
    assert summary.done == [slow] and summary.skipped == [s.sample_id for s in samples[1:]]


def notebook_study(ctx):
    """Defined in this test module as a notebook cell would define it: `mf.run` ships it with the request."""

    with ctx.trace():
        logits = ctx.adapter.lm_head.output[0, -1].save()
    return ctx.sweep(["video->last", "cross_frame"]).assign(top_logit=float(logits.detach().max()))


def test_a_notebook_function_runs_through_mf_run_remotely_with_the_local_numbers(ndif_stack, organism, tmp_path):
    import mapflow as mf

    data = mf.load_benchmark("tvbench", default_data_dir(), tasks=TASKS, limit=1, seed=0)
    common = {"window": 3, "samples": "all", "progress": False}
    remote = mf.run(notebook_study, organism, data, tmp_path / "remote.zarr", remote=settings_for(ndif_stack), **common)
    mf.run(notebook_study, organism, data, tmp_path / "local.zarr", plan="naive", **common)
    assert remote.sizes["sample"] == len(TASKS) and "top_logit" in remote
    assert_same_results(tmp_path / "remote.zarr", tmp_path / "local.zarr")
    assert ndif_stack.host in str(remote.attrs["provenance"]["runtime"])
    ran = remote.attrs["provenance"]["runtime"]["remote"]  # what ran where, as the NDIF backend said when it started
    assert (ran["trace_plan"], ran["cells_plan"], ran["concurrency"]) == ("naive", "auto", 2)


@pytest.mark.parametrize("batch", [2, 5])
def test_batched_requests_match_the_local_run_with_one_request_per_batch(
    batch, ndif_stack, organism, more_samples, tmp_path, monkeypatch
):
    """--remote-batch B: ceil(samples / B) requests, every cell the local fast plan's, stored in sample order."""
    from mapflow.remote.client import PollingBackend

    submitted = []
    submit = PollingBackend.submit
    monkeypatch.setattr(PollingBackend, "submit", lambda self, tracer: (submitted.append(1), submit(self, tracer))[1])
    summary = run(
        "information_flow",
        organism,
        more_samples,
        tmp_path / "remote.zarr",
        remote=settings_for(ndif_stack, batch=batch),
    )
    ids = [s.sample_id for s in more_samples]
    assert summary.done == ids and summary.failed == {}
    assert len(submitted) == -(-len(more_samples) // batch)
    assert list(xr.open_zarr(tmp_path / "remote.zarr").sample.values) == ids
    run("information_flow", organism, more_samples, tmp_path / "local.zarr")
    assert_same_results(tmp_path / "remote.zarr", tmp_path / "local.zarr")
    assert f'"batch": {batch}' in str(xr.open_zarr(tmp_path / "remote.zarr").attrs).replace("'", '"')


def test_a_sample_failing_on_the_server_fails_alone_in_its_batch_and_resumes(ndif_stack, organism, samples, tmp_path):
    bad = samples[0].sample_id
    study = write_study(
        tmp_path,
        "one_bad_layer",
        f"""
        from mapflow.studies.cross_frame import run as cross_frame

        def run(ctx):
            if ctx.sample.sample_id == {bad!r}:  # no layer 999: the engine raises on the server, for this sample only
                return ctx.knockout(["video->last"], {{"bad": (999,)}})
            return cross_frame(ctx)
    """,
    )
    settings = settings_for(ndif_stack, batch=len(samples))
    summary = run(study, organism, samples, tmp_path / "out.zarr", remote=settings)
    assert list(summary.failed) == [bad] and summary.done == [s.sample_id for s in samples[1:]]
    reason = ResultStore(tmp_path / "out.zarr").failed_samples()[bad]["reason"]
    assert reason.startswith("RemoteJobFailed") and ndif_stack.host in reason and "raised on the server" in reason
    summary = run("cross_frame", organism, samples, tmp_path / "out.zarr", remote=settings)
    assert summary.done == [bad] and summary.skipped == [s.sample_id for s in samples[1:]]


def test_server_dying_with_requests_in_flight_keeps_finished_samples_and_resumes(
    ndif_stack, organism, more_samples, tmp_path
):
    """Runs last: it stops the session's server, when the third sample begins, with two samples in flight."""
    from mapflow.ndif_local import stack

    samples = more_samples[:4]
    study = write_study(
        tmp_path,
        "server_dies",
        f"""
        import threading
        from mapflow.ndif_local import stack
        from mapflow.studies.cross_frame import run as cross_frame

        seen = []
        lock = threading.Lock()

        def run(ctx):
            with lock:
                seen.append(ctx.sample.sample_id)
                if len(seen) == 3:
                    stack.down({ndif_stack.home!r})
            return cross_frame(ctx)
    """,
    )
    out = tmp_path / "out.zarr"
    with pytest.raises(ServerUnreachable) as caught:
        run(study, organism, samples, out, remote=settings_for(ndif_stack), concurrency=2)
    message = str(caught.value)
    ids = [s.sample_id for s in samples]
    assert ndif_stack.host in message and "organism-video" in message and any(i in message for i in ids)
    store = ResultStore(out)
    kept = list(xr.open_zarr(out).sample.values) if store.committed_count else []  # the store opens whole
    assert kept == ids[: len(kept)] and len(kept) < 3 and store.failed_samples() == {}  # an in-order prefix
    # the re-run (here locally: the server is gone) resumes after the stored samples and ends where a clean run ends
    naive = replace(CONFIG, plan="naive")
    summary = run("cross_frame", organism, samples, out, config=naive)
    assert summary.skipped == kept and summary.done == ids[len(kept) :]
    run("cross_frame", organism, samples, tmp_path / "local.zarr", config=naive)
    assert_same_results(out, tmp_path / "local.zarr")
    assert not stack.status(ndif_stack.home)["running"]
