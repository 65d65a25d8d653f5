"""The analytic prefill FLOP count equals torch's FlopCounterMode around the pruned language model, and dropping or
frame-local attention really computes less (tiny random models, eager attention so every matmul is visible)."""

import numpy as np
import pytest
from torch.utils.flop_counter import FlopCounterMode

from mapflow.data.sample import Sample
from mapflow.inputs.prompts import LLAVA_MCQA, mcqa_segments
from mapflow.models import load_adapter
from mapflow.pruning.flops import prefill_flops
from mapflow.pruning.forward import pruned_prefill
from mapflow.pruning.spec import PruneSpec

SPECS = [
    PruneSpec(),
    PruneSpec(drop_after=1),
    PruneSpec(drop_after=1, drop="least_attended", ratio=0.5),
    PruneSpec(frame_local_layers=(0, 2)),
    PruneSpec(drop_after=1, drop="least_attended", ratio=0.5, frame_local_layers=(1, 2)),
]


@pytest.fixture(scope="module", params=["qwen2_5_vl", "videollama3"])
def adapter_and_input(request, tmp_path_factory):
    from mapflow.testing.tiny_families import build_tiny_family

    path = build_tiny_family(request.param, tmp_path_factory.mktemp("prune-flops") / request.param, num_layers=4)
    adapter = load_adapter(path, attn_implementation="eager", dtype="float32")
    sample = Sample("m/0", "m", "x.mp4", "Which way does it move?", ("Up.", "Down."), 1)
    clip = np.random.default_rng(0).integers(0, 256, (4, 40, 48, 3), dtype=np.uint8)
    return adapter, adapter.prepare(clip, mcqa_segments(sample, adapter.prompt_template or LLAVA_MCQA))


def counted(adapter, prepared, spec):
    """FlopCounterMode's count of the language model and the LM head (the vision tower left out), and the result."""
    with FlopCounterMode(display=False) as mode:
        result = pruned_prefill(adapter, prepared, spec)
    counts = mode.get_flop_counts()
    names = [n for n in counts if n.endswith(".language_model") or n.endswith(".lm_head")]
    assert len(names) == 2, f"expected the language model and the LM head among {list(counts)}"
    return sum(sum(counts[n].values()) for n in names), result


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.label())
def test_flop_count_matches_the_flop_counter(spec, adapter_and_input):
    adapter, prepared = adapter_and_input
    measured, result = counted(adapter, prepared, spec)
    count = prefill_flops(adapter, prepared, spec, kept=result.kept)
    assert count.total == measured, f"{spec.label()}: counted {count.total}, FlopCounterMode {measured}"
    assert count.total == sum(count.per_layer) + count.parts["lm_head"] == sum(count.parts.values())
    assert (count.parts["ranking"] > 0) == (spec.drop == "least_attended" and spec.drop_after is not None)


def test_pruning_computes_less(adapter_and_input):
    adapter, prepared = adapter_and_input
    layout = prepared.layout
    full_measured, _ = counted(adapter, prepared, PruneSpec())
    full = prefill_flops(adapter, layout, PruneSpec())
    dropped_measured, result = counted(adapter, prepared, PruneSpec(drop_after=1))
    dropped = prefill_flops(adapter, layout, PruneSpec(drop_after=1))
    video = len(layout.positions("video"))
    assert dropped.positions == [layout.seq_len] * 2 + [layout.seq_len - video] * 2
    assert len(result.kept) == layout.seq_len - video
    assert dropped_measured < full_measured and dropped.total < full.total
    local = prefill_flops(adapter, layout, PruneSpec(frame_local_layers=(0,)))
    assert local.per_layer[0] < full.per_layer[0] and local.per_layer[1:] == full.per_layer[1:]
    # nothing dropped after the last layer: the same work as unpruned
    assert prefill_flops(adapter, layout, PruneSpec(drop_after=3)).total == full.total
