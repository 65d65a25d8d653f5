"""Reading the residual stream through the unembedding: layer-wise answer probability (paper Fig. 8) and the logit
lens on video tokens (Fig. 4, Fig. T).

Two conventions exist and the choice moves curves by a layer and changes their scale, so it is explicit:

- ``paper`` (default, the paper's text): the output of decoder layer ``i`` goes through the final norm and the LM head,
  at every layer. The last layer then reproduces the model's own logits exactly.
- ``released_code``: what the authors' scripts compute. Answer probability (``gen_prob_analysis``): the raw residual
  after layer ``i`` through the LM head, with the final norm only on the last layer (HF ``hidden_states``). Logit
  lens (``logit_lens_analysis``): the residual *entering* layer ``i`` (layer 0 reads the embeddings) projected with the
  *input embedding* matrix, and the final-normed output for the last layer.

All projections run inside the nnsight trace (ad-hoc calls of the adapter's envoys), one layer at a time, and only
what is asked for (probabilities of a few tokens, or top-1 ids) is saved.
"""

from __future__ import annotations

import nnsight
import torch

from ..knockout.engine import clean_readout
from ..models.base import PreparedInput, VideoLLMAdapter

LENS_CONVENTIONS = ("paper", "released_code")


def _check(convention: str) -> None:
    if convention not in LENS_CONVENTIONS:
        raise ValueError(f"lens convention must be one of {LENS_CONVENTIONS}, got '{convention}'")


def layer_token_probabilities(
    adapter: VideoLLMAdapter, prepared: PreparedInput, token_ids, *, position: int = -1, convention: str = "paper"
) -> torch.Tensor:
    """Probability (layers, len(token_ids)) of each token at ``position`` when each layer's output is unembedded."""
    _check(convention)
    ids = torch.as_tensor(list(token_ids), dtype=torch.long)
    last_layer = adapter.num_layers - 1
    with torch.no_grad(), adapter.trace(prepared):
        rows = []
        for i in range(adapter.num_layers):
            hidden = adapter.layers[i].output[0, position]
            logits = adapter.logit_lens(hidden) if convention == "paper" or i == last_layer else adapter.lm_head(hidden)
            probs = logits.float().softmax(-1)
            rows.append(probs[ids])
        out = nnsight.save(rows)
    return torch.stack([r.detach() for r in out])


def clean_and_layer_probabilities(
    adapter: VideoLLMAdapter, prepared: PreparedInput, token_ids, gt_token: int, convention: str = "paper"
) -> dict[str, torch.Tensor]:
    """`clean_readout` (``clean``) and `layer_token_probabilities` of ``token_ids`` plus the predicted token
    (``probs``, last column): the answer-probability study's sample, one request on a server
    (`StudyContext.measure`)."""
    clean = clean_readout(adapter, prepared, gt_token)
    return {
        "clean": clean,
        "probs": layer_token_probabilities(adapter, prepared, [*token_ids, int(clean[0])], convention=convention),
    }


def clean_and_layer_top_tokens(
    adapter: VideoLLMAdapter, prepared: PreparedInput, positions, gt_token: int, convention: str = "paper"
) -> dict[str, torch.Tensor]:
    """`layer_top_tokens` (``tops``) and `clean_readout` (``clean``): the logit-lens study's sample, one request."""
    return {
        "tops": layer_top_tokens(adapter, prepared, positions, convention=convention),
        "clean": clean_readout(adapter, prepared, gt_token),
    }


def layer_top_tokens(
    adapter: VideoLLMAdapter, prepared: PreparedInput, positions, *, convention: str = "paper"
) -> torch.Tensor:
    """Top-1 token id (layers, len(positions)) of the logit lens at each of ``positions``."""
    _check(convention)
    positions = torch.as_tensor(list(positions), dtype=torch.long)
    last_layer = adapter.num_layers - 1
    with torch.no_grad(), adapter.trace(prepared):
        tops = []
        for i in range(adapter.num_layers):
            if convention == "paper":
                logits = adapter.logit_lens(adapter.layers[i].output[0, positions])
            else:
                hidden = (
                    adapter.final_norm(adapter.layers[i].output[0, positions])
                    if i == last_layer
                    else adapter.layers[i].inputs[0][0][0, positions]
                )
                logits = hidden @ adapter.input_embeddings.weight.T
            tops.append(logits.argmax(-1))
        out = nnsight.save(tops)
    return torch.stack([t.detach() for t in out])
