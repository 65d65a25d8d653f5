"""Knockout exactness: the nnsight mask replacement equals a hand-written masked attention, and empty knockouts are
bit-exact, under both sdpa and eager."""

import math

import pytest
import torch
from tolerances import assert_float32_exact

from mapflow.knockout.flows import Flow
from mapflow.knockout.masks import apply_knockout, knockout_attention_mask


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def reference_masked_attention(attn_module, hidden, cos, sin, allowed, dtype=torch.float64):
    """Attention written out by hand in ``dtype``, -inf on every cut or future edge."""
    m = attn_module

    def linear(x, proj):
        return torch.nn.functional.linear(x, proj.weight.to(dtype), None if proj.bias is None else proj.bias.to(dtype))

    b, n, _ = hidden.shape
    hd = m.head_dim
    h = hidden.to(dtype)
    q, k, v = linear(h, m.q_proj), linear(h, m.k_proj), linear(h, m.v_proj)
    q, k, v = (t.view(b, n, -1, hd).transpose(1, 2) for t in (q, k, v))
    cos, sin = cos.to(dtype)[:, None], sin.to(dtype)[:, None]
    q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    scores = scores.masked_fill(~allowed, float("-inf"))
    out = scores.softmax(-1) @ v
    out = out.transpose(1, 2).reshape(b, n, -1)
    return torch.nn.functional.linear(out, m.o_proj.weight.to(dtype))


@pytest.mark.parametrize("flow", ["cross_frame", "video->last", "question->last", "video->question+last->last"])
def test_knockout_equals_hand_written_masked_attention(adapter, prepared, flow):
    layout = prepared.layout
    blocked = torch.from_numpy(Flow.parse(flow).block_matrix(layout))
    window = [1, 2]
    probe = 2
    layers = adapter.layers
    with torch.no_grad(), adapter.trace(prepared):
        for i in window:
            args, kwargs = layers[i].inputs
            kwargs = dict(kwargs)
            kwargs["attention_mask"] = knockout_attention_mask(kwargs.get("attention_mask"), blocked)
            layers[i].inputs = (args, kwargs)
            if i == probe:
                attn_kwargs = adapter.attention(i).inputs[1]
                hidden = attn_kwargs["hidden_states"].save()
                cos, sin = attn_kwargs["position_embeddings"]
                cos, sin = cos.save(), sin.save()
                out = adapter.attention(i).output[0].save()
    n = layout.seq_len
    allowed = torch.ones(n, n, dtype=torch.bool).tril() & ~blocked
    attn = adapter.hf_model.model.language_model.layers[probe].self_attn
    expected = reference_masked_attention(attn, hidden, cos, sin, allowed)
    plain32 = reference_masked_attention(attn, hidden, cos, sin, allowed, torch.float32)
    assert_float32_exact(out, plain32, expected, flow)


def last_logits(adapter, prepared, blocked=None, layers=()):
    with torch.no_grad(), adapter.trace(prepared):
        if blocked is not None:
            apply_knockout(adapter.layers, blocked, layers)
        logits = adapter.lm_head.output[0].save()
    return logits


def test_empty_knockout_is_bit_exact(adapter, prepared):
    n = prepared.layout.seq_len
    clean = last_logits(adapter, prepared)
    empty = last_logits(adapter, prepared, torch.zeros(n, n, dtype=torch.bool), range(adapter.num_layers))
    assert torch.equal(clean, empty)
    plain = adapter.hf_model(**prepared.inputs).logits[0]
    assert torch.equal(clean, plain)


def test_real_knockout_changes_only_rows_after_the_first_cut(adapter, prepared):
    layout = prepared.layout
    blocked = torch.from_numpy(Flow.parse("video->last").block_matrix(layout))
    clean = last_logits(adapter, prepared)
    knocked = last_logits(adapter, prepared, blocked, range(adapter.num_layers))
    assert not torch.equal(clean[-1], knocked[-1])
    assert torch.equal(clean[:-1], knocked[:-1])  # causality: earlier positions cannot see the cut


def test_knockout_outside_the_window_leaves_other_layers_alone(adapter, prepared):
    """Cutting in layer 3 only must equal cutting in layers {3} through the window API, and differ from layer 0."""
    blocked = torch.from_numpy(Flow.parse("video->last").block_matrix(prepared.layout))
    a = last_logits(adapter, prepared, blocked, [3])
    b = last_logits(adapter, prepared, blocked, [0])
    assert not torch.equal(a[-1], b[-1])


def test_mask_helper_shapes_and_values():
    blocked = torch.zeros(3, 3, dtype=torch.bool)
    blocked[2, 0] = True
    bool_mask = knockout_attention_mask(None, blocked)
    assert bool_mask.shape == (1, 1, 3, 3) and bool_mask.dtype == torch.bool
    assert bool_mask[0, 0].tolist() == [[True, False, False], [True, True, False], [False, True, True]]
    additive = torch.zeros(1, 1, 3, 3).masked_fill(
        ~torch.ones(3, 3, dtype=torch.bool).tril(), torch.finfo(torch.float32).min
    )
    cut = knockout_attention_mask(additive, blocked)
    assert cut[0, 0, 2, 0] == torch.finfo(torch.float32).min and additive[0, 0, 2, 0] == 0  # never edited in place
    suffix = knockout_attention_mask(None, blocked[1:])
    assert suffix.shape == (1, 1, 2, 3) and suffix[0, 0].tolist() == [[True, True, False], [False, True, True]]
    batched = knockout_attention_mask(additive, torch.stack([blocked, torch.zeros_like(blocked)]))
    assert batched.shape == (2, 1, 3, 3) and batched[1, 0, 2, 0] == 0
