"""``--dtype auto`` (the default): bfloat16 on a GPU as the paper runs, float32 on a CPU; the store records what ran."""

import pytest


@pytest.mark.parametrize(
    "device, device_map, expected",
    [("cpu", None, "float32"), ("cuda", None, "bfloat16"), ("cuda:1", None, "bfloat16"), ("cpu", "auto", "bfloat16")],
)
def test_auto_resolves_per_device(device, device_map, expected):
    from mapflow.models import resolve_dtype

    assert resolve_dtype("auto", device, device_map) == expected
    assert resolve_dtype("float16", device, device_map) == "float16"  # an explicit choice is kept


def test_run_records_the_resolved_dtype(tiny_model_dir, tiny_benchmark):
    from mapflow.analysis.resolve import prepare_run

    run = prepare_run("accuracy", tiny_model_dir, tiny_benchmark, limit=1)
    assert str(run.adapter.hf_model.dtype) == "torch.float32"
    assert run.provenance["config"]["dtype"] == "float32"
