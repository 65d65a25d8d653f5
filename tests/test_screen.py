"""The screen: its local changes are the model's own attention output under the knockout, and its estimate is the
derivative of the metric along those changes (a central finite difference in float64)."""

import types

import pytest
import torch

from mapflow.errors import KnockoutConfigError
from mapflow.knockout.flows import Flow
from mapflow.knockout.masks import apply_layer_masks, head_blocked
from mapflow.knockout.screen import layer_effects, local_change, metric_value, parse_plan, screen_cells, screen_forward


def blocked(layout, flow):
    return torch.from_numpy(Flow.parse(flow).block_matrix(layout))


def attention_output(adapter, prepared, layer, masks):
    with torch.no_grad(), adapter.trace(prepared):
        apply_layer_masks(adapter.layers, masks)
        out = adapter.attention_call(layer).output[0].save()
    return out.detach()[0]  # (L, heads, d)


@pytest.mark.parametrize("flow,heads", [("cross_frame", None), ("video->last", (1,)), ("frame_0->frame_2", (0, 3))])
def test_local_change_is_the_models_own_knocked_out_attention(adapter, prepared, flow, heads):
    cut = blocked(prepared.layout, flow)
    fwd = screen_forward(adapter, prepared)
    layer = 2
    clean = attention_output(adapter, prepared, layer, {})
    mask = cut if heads is None else head_blocked(cut, heads, adapter.num_heads)
    knocked = attention_output(adapter, prepared, layer, {layer: mask})
    rows, change = local_change(fwd, layer, cut, heads)
    assert (change - (knocked - clean)[rows]).abs().max() <= 1e-5
    assert change.abs().max() > 1e-4  # the flow really changes the layer
    others = torch.ones(clean.shape[0], dtype=torch.bool)
    others[rows] = False
    assert (knocked - clean)[others].abs().max() <= 1e-6  # rows the flow does not cut keep their output


@pytest.fixture(scope="module")
def double_model(tiny_model_dir, sample, frames):
    from mapflow.inputs.prompts import mcqa_segments
    from mapflow.models import load_adapter

    adapter = load_adapter(tiny_model_dir, attn_implementation="sdpa")  # eager softmaxes in float32
    adapter.hf_model.double()
    prepared = adapter.prepare(
        frames, mcqa_segments(sample), option_letters=sample.option_letters, true_letter=sample.answer_letter
    )
    return adapter, prepared


@pytest.fixture(scope="module")
def sample():
    from mapflow.data.sample import Sample

    return Sample(
        "moving_direction/0000",
        "moving_direction",
        "unused.mp4",
        "Which direction does it move?",
        ("Up.", "Down.", "Left."),
        2,
    )


@pytest.fixture(scope="module")
def frames():
    import numpy as np

    return np.random.default_rng(0).integers(0, 256, (4, 40, 48, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "flow,heads,layers,metric",
    [
        ("cross_frame", None, (1, 2), "logodds"),
        ("video->last", (2,), (0, 1, 2, 3), "logp"),
        ("question->last", None, (3,), "logodds"),
    ],
)
def test_screen_equals_a_central_finite_difference(double_model, flow, heads, layers, metric):
    """d/de log p(answer) with every window layer's attention output moved by e * its local change, at e = 0.

    float64 throughout (RMSNorm patched to stay in float64): central differences at e = 1e-2 and 5e-3 combined by
    Richardson extrapolation leave a truncation error O(e^4) ~ 1e-8 and a rounding error ~1e-13 / e ~ 1e-11, both far
    below the bound of 1e-6 of the derivative's scale (a wrong row, head, layer or sign is off by O(1))."""
    adapter, prepared = double_model
    with pytest.MonkeyPatch.context() as patch:  # the model's RMSNorm computes in float32 whatever its input
        for module in adapter.hf_model.modules():
            if type(module).__name__.endswith("RMSNorm"):  # per instance: nnsight wraps each module's forward
                patch.setattr(module, "forward", types.MethodType(_rms_norm_float64, module))
        check_finite_difference(adapter, prepared, flow, heads, layers, metric)


def _rms_norm_float64(self, hidden):
    return self.weight * hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)


def check_finite_difference(adapter, prepared, flow, heads, layers, metric):
    cut = blocked(prepared.layout, flow)
    fwd = screen_forward(adapter, prepared)
    token = int(fwd.logits.argmax())
    grads = fwd.gradients([token], metric)
    estimate = float(screen_cells(fwd, grads, [(cut, heads)], [layers])[0, 0, 0])
    changes = {}
    for layer in layers:
        rows, change = local_change(fwd, layer, cut, heads)
        full = torch.zeros_like(fwd.outputs[layer][0])
        full[rows] = change.to(full.dtype)
        changes[layer] = full

    def central(eps):
        logp = [
            float(
                metric_value(
                    screen_forward(
                        adapter, prepared, {i: sign * eps * c for i, c in changes.items()}
                    ).logits_graph.detach(),
                    token,
                    metric,
                )
            )
            for sign in (1, -1)
        ]
        return (logp[0] - logp[1]) / (2 * eps)

    finite_difference = (4 * central(5e-3) - central(1e-2)) / 3  # Richardson: the e^2 term cancels
    scale = max(abs(finite_difference), float(layer_effects(fwd, grads, cut, heads).abs().max()), 1e-3)
    assert abs(estimate - finite_difference) <= 1e-6 * scale
    assert abs(estimate) > 1e-6  # a real, non-zero effect was estimated


def test_plan_parsing():
    assert parse_plan("screen") == ("screen", 0)
    assert parse_plan("screen+verify 5") == ("screen+verify", 5)
    assert parse_plan("auto") == ("auto", 0)
    with pytest.raises(KnockoutConfigError, match="--plan"):
        parse_plan("screen+verify 0")


def test_cells_equal_local_changes_dotted_with_the_gradient(sdpa_adapter, prepared):
    """The shared-per-layer computation of `screen_cells` equals `layer_effects` (local change . gradient)."""
    layout = prepared.layout
    patterns = [
        (blocked(layout, "cross_frame"), None),
        (blocked(layout, "video->last"), (1, 2)),
        (blocked(layout, "frame_0->frame_3"), None),
    ]
    fwd = screen_forward(sdpa_adapter, prepared)
    grads = fwd.gradients([int(fwd.logits.argmax()), 5])
    layer_sets = [(0,), (1, 2), (0, 1, 2, 3)]
    cells = screen_cells(fwd, grads, patterns, layer_sets)
    for p, (cut, heads) in enumerate(patterns):
        effects = layer_effects(fwd, grads, cut, heads)
        expected = torch.stack([effects[:, list(layers)].sum(-1) for layers in layer_sets])
        scale = float(effects.abs().max())
        assert scale > 0 and (cells[p] - expected).abs().max() <= 1e-4 * scale
