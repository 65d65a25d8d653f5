"""The pruned forward (issue 27): exact where it claims to be, in every family, on tiny random float64 checkpoints.

- nothing pruned (no spec, or drop after the last layer): the model's own logits;
- dropping after layer L changes nothing up to L, later layers hold only the kept positions, and the rows before the
  video (which never read it) stay exactly the unpruned ones;
- frame-local layers computed per frame equal the dense computation with the cross-frame edges knocked out through
  mapflow's knockout mask;
- greedy generation with the pruned KV cache equals a full pruned recompute of prompt + generated tokens;
- the adapter is unchanged afterwards, also when the forward fails.
"""

import numpy as np
import pytest
import torch

from mapflow.data.sample import Sample
from mapflow.inputs.prompts import LLAVA_MCQA, mcqa_segments
from mapflow.models import load_adapter
from mapflow.models.attention_mask import apply_knockout
from mapflow.pruning.forward import extend_prepared, greedy_run, pruned_prefill
from mapflow.pruning.spec import PruneSpec

FAMILIES = ["llava_next_video", "llava_onevision", "qwen2_5_vl", "qwen3_vl", "internvl", "videollama3"]
LAYERS = 4
EPS64 = float(torch.finfo(torch.float64).eps)


def close64(a, b, scale=None) -> float:
    """Bound for two float64 computations of the same quantity in another order: a few hundred ulps of its scale."""
    scale = float(b.abs().max()) if scale is None else scale
    return 256 * EPS64 * max(scale, 1.0)


@pytest.fixture(scope="module")
def family_adapter(tmp_path_factory):
    from mapflow.testing.tiny import build_tiny_llava_next_video
    from mapflow.testing.tiny_families import build_tiny_family

    root = tmp_path_factory.mktemp("prune-families")
    cache = {}

    def get(family, attn="sdpa"):  # the float64 reference: eager's softmax runs in float32 even for float64 models
        if (family, attn) not in cache:
            path = root / family
            if not path.exists():
                if family == "llava_next_video":
                    build_tiny_llava_next_video(path, seed=1, num_layers=LAYERS)
                else:
                    build_tiny_family(family, path, seed=2, num_layers=LAYERS)
            cache[family, attn] = load_adapter(path, attn_implementation=attn, dtype="float64")
        return cache[family, attn]

    return get


def prepare(adapter):
    sample = Sample(
        "m/0", "m", "x.mp4", "Which direction does the red square move in the video?", ("Up.", "Down.", "Left."), 2
    )
    clip = np.random.default_rng(0).integers(0, 256, (4, 40, 48, 3), dtype=np.uint8)
    return adapter.prepare(clip, mcqa_segments(sample, adapter.prompt_template or LLAVA_MCQA))


def unpruned(adapter, prepared):
    """The adapter's ordinary forward: logits at the last position and every layer's output (the last one after the
    final norm, as transformers reports it)."""
    with torch.no_grad():
        out = adapter.hf_model(**prepared.inputs, output_hidden_states=True)
    return out.logits[0, -1], [h[0] for h in out.hidden_states[1:]]


@pytest.mark.parametrize("family", FAMILIES)
def test_nothing_pruned_gives_the_models_logits(family, family_adapter):
    adapter = family_adapter(family)
    prepared = prepare(adapter)
    logits, _ = unpruned(adapter, prepared)
    for spec in (PruneSpec(), PruneSpec(drop_after=LAYERS - 1), PruneSpec(LAYERS - 1, "least_attended", 0.5)):
        result = pruned_prefill(adapter, prepared, spec)
        diff = float((result.logits.double() - logits).abs().max())
        assert diff <= close64(result.logits, logits), f"{family} {spec.label()}: logits moved by {diff:.3g}"
    # a drop that some layer sees does change them (the comparison can fail)
    moved = pruned_prefill(adapter, prepared, PruneSpec(drop_after=0)).logits
    assert float((moved.double() - logits).abs().max()) > 1e3 * close64(moved, logits)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("drop", ["video", "least_attended"])
def test_drop_after_L_changes_nothing_before_L(family, drop, family_adapter):
    adapter = family_adapter(family)
    prepared = prepare(adapter)
    layout = prepared.layout
    _, reference = unpruned(adapter, prepared)
    after = 0 if family == "qwen3_vl" else 1  # Qwen3-VL: a drop before its deepstack layers end (features re-indexed)
    spec = PruneSpec(drop_after=after, drop=drop, ratio=0.5)
    result = pruned_prefill(adapter, prepared, spec, hidden_states=True)
    video = layout.positions("video")
    expected_kept = layout.seq_len - (len(video) if drop == "video" else round(0.5 * len(video)))
    assert len(result.kept) == expected_kept
    assert not np.isin(video, result.kept.numpy()).all()
    before_video = int(layout["video"].start)
    final_norm = adapter.final_norm._module
    for layer, (mine, full) in enumerate(zip(result.hidden_states, reference)):
        if layer == LAYERS - 1:  # the model reports its last layer's output after the final norm
            with torch.no_grad():
                mine = final_norm(mine)
        if layer <= after:
            assert mine.shape == full.shape, f"{family} layer {layer}"
            diff = float((mine - full).abs().max())
            assert diff <= close64(mine, full), f"{family} layer {layer} <= L moved by {diff:.3g}"
        else:
            assert mine.shape[0] == len(result.kept), f"{family} layer {layer} holds {mine.shape[0]} positions"
            # rows before the video never read it: exactly the unpruned ones; later rows did read it: they move
            head = full[:before_video]
            assert float((mine[:before_video] - head).abs().max()) <= close64(mine, full)
            assert float((mine[-1] - full[-1]).abs().max()) > 1e3 * close64(mine, full)


def frame_local_blocked(layout) -> torch.Tensor:
    """(L, L) edges a frame-local layer cuts: a video token reading anything from the video's start on outside its
    own frame (earlier frames, markup between frames)."""
    blocked = torch.zeros(layout.seq_len, layout.seq_len, dtype=torch.bool)
    start = int(layout["video"].start)
    for frame in layout.frames:
        rows = torch.as_tensor(frame.positions())
        cut = torch.zeros(layout.seq_len, dtype=torch.bool)
        cut[start:] = True
        cut[rows] = False
        blocked[rows[:, None], torch.nonzero(cut).flatten()[None, :]] = True
    return blocked


@pytest.mark.parametrize("family", FAMILIES)
def test_frame_local_layers_equal_the_dense_masked_computation(family, family_adapter):
    adapter = family_adapter(family)
    prepared = prepare(adapter)
    layers = (0, 2)
    blocked = frame_local_blocked(prepared.layout)
    with torch.no_grad(), adapter.trace(prepared):
        apply_knockout(adapter.layers, blocked, layers)
        dense = adapter.lm_head.output[0, -1].save()
    result = pruned_prefill(adapter, prepared, PruneSpec(frame_local_layers=layers))
    plain, _ = unpruned(adapter, prepared)
    diff = float((result.logits.double() - dense).abs().max())
    assert diff <= close64(result.logits, dense), f"{family}: per-frame vs dense masked differ by {diff:.3g}"
    assert float((plain - dense).abs().max()) > 1e3 * close64(plain, dense)  # the cut edges mattered


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_generation_equals_full_pruned_recompute(family, family_adapter):
    adapter = family_adapter(family)
    prepared = prepare(adapter)
    specs = [
        PruneSpec(drop_after=1),
        PruneSpec(drop_after=1, drop="least_attended", ratio=0.5, frame_local_layers=(0, 2)),
    ]
    for spec in specs:
        run = greedy_run(adapter, prepared, spec, max_new_tokens=4, stop_at_eos=False)
        assert len(run.tokens) == 4
        for step, token in enumerate(run.tokens):
            again = pruned_prefill(
                adapter, extend_prepared(prepared, run.tokens[:step]), spec, rank_rows=prepared.layout.seq_len
            )
            diff = float((again.logits - run.logits[step]).abs().max())
            assert diff <= close64(again.logits, run.logits[step]), f"{family} {spec.label()} step {step}: {diff:.3g}"
            assert int(again.logits.argmax()) == token
            assert torch.equal(again.kept[: len(run.prefill.kept)], run.prefill.kept)


def test_adapter_is_left_as_it_was_also_on_error(family_adapter):
    adapter = family_adapter("qwen3_vl")
    prepared = prepare(adapter)
    lm = adapter.language_model._module
    before, _ = unpruned(adapter, prepared)
    layers = list(lm.layers)
    hooks_before = [(dict(layer._forward_pre_hooks), dict(layer._forward_hooks)) for layer in layers]

    def fail(module, args, output):
        raise RuntimeError("boom")

    handle = layers[2].register_forward_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            pruned_prefill(adapter, prepared, PruneSpec(drop_after=0, frame_local_layers=(1,)), hidden_states=True)
    finally:
        handle.remove()
    pruned_prefill(adapter, prepared, PruneSpec(drop_after=1, drop="least_attended", ratio=0.5))
    assert adapter.text_config._attn_implementation == "sdpa"
    assert [(dict(layer._forward_pre_hooks), dict(layer._forward_hooks)) for layer in layers] == hooks_before
    assert "_deepstack_process" not in vars(lm)
    after, _ = unpruned(adapter, prepared)
    assert torch.equal(before, after)
