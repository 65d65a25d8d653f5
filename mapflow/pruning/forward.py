"""The pruned forward pass: video tokens leave the sequence after layer L, and frame-local layers attend per frame.

Plain torch on the adapter's Hugging Face modules (no nnsight trace):

1. The model's own forward runs up to the language model's call (vision tower, feature merge, Qwen-VL's 3-D rotary
   positions, Qwen3-VL's deepstack features) and is stopped there; its keyword arguments are kept.
2. The language model runs with those arguments and a fresh KV cache, with hooks on its decoder layers:
   - layer L+1's input hidden states are cut to the kept positions, and every layer > L gets the rotary
     ``position_embeddings`` (cos/sin, sequence axis), the 4-D ``attention_mask`` (query and key axes; None stays None)
     and ``position_ids`` cut the same way. So later layers compute and cache only the kept positions, at the rotary
     positions those tokens have in the full sequence.
   - for "least_attended", layer L's attention records what each video token received (`mapflow.pruning.attention`),
     and the kept set is chosen from it before layer L+1 runs.
   - frame-local layers run `grouped_attention` (per frame, never a dense masked matrix).
3. Logits: the final norm (inside the language model) and the LM head at the last position.

Generation continues from the cache: a new token gets the position after the full prompt's last position (for
Qwen-VL: one more than the prompt's largest rotary position, as its rope deltas give), layers <= L attend over the full
cached prompt, layers > L over the kept positions and the generated tokens (the eager mask is cut on its key axis).

Every hook, the attention registration and the models' rope-delta caches are removed/restored on exit, also on error,
so the adapter is the unmodified model afterwards. Batch size 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..inputs.layout import TokenLayout
from ..models.base import PreparedInput
from .attention import PruneAttention, frame_local_groups, pruning_attention
from .spec import PruneSpec


@dataclass
class PrunedPrefill:
    """The pruned prefill of one prompt.

    ``logits`` (vocab,) float32 (float64 for a float64 model) at the last prompt position; ``kept`` the positions left after the drop (all positions
    when nothing is dropped); ``hidden_states`` (when asked) one (positions, hidden) tensor per decoder layer output,
    at the positions that layer ran on (all for layers <= L, ``kept`` after); ``past_key_values`` the KV cache (layers
    > L hold only ``kept``); ``received`` (least_attended) the attention each prompt position got in layer L, summed
    over heads and query rows; ``next_position`` the rotary position of the first generated token."""

    logits: torch.Tensor
    kept: torch.Tensor
    hidden_states: list[torch.Tensor] | None
    past_key_values: object
    prompt_len: int
    next_position: int
    received: torch.Tensor | None = None
    position_shape: tuple[int, ...] = (1,)  # leading shape of the language model's position ids ((3, 1) for Qwen-VL)


@dataclass
class GreedyRun:
    """Greedy tokens and the logits each step chose from (step 0: the prefill's)."""

    tokens: list[int]
    logits: list[torch.Tensor]
    prefill: PrunedPrefill


class _StopForward(Exception):
    pass


def check_spec(adapter, layout: TokenLayout, spec: PruneSpec) -> None:
    layers = adapter.num_layers
    if spec.drop_after is not None and spec.drop_after >= layers:
        raise ValueError(f"PruneSpec.drop_after={spec.drop_after} but the model has {layers} layers (0..{layers - 1})")
    bad = [layer for layer in spec.frame_local_layers if layer >= layers]
    if bad:
        raise ValueError(f"PruneSpec.frame_local_layers {bad} outside the model's {layers} layers")
    if len(layout.positions("video")) == 0:
        raise ValueError("the prompt has no video tokens to prune")


def frame_index(layout: TokenLayout, length: int) -> torch.Tensor:
    """(length,) each position's frame in the prompt; -1 outside the video's feature tokens (markup, text)."""
    frame_of = torch.full((length,), -1, dtype=torch.long)
    for f, frame in enumerate(layout.frames):
        frame_of[torch.as_tensor(frame.positions())] = f
    return frame_of


def dropped_count(spec: PruneSpec, num_video: int) -> int:
    """Video tokens a spec drops: all for "video", round(ratio * video tokens) for "least_attended"."""
    if spec.drop_after is None:
        return 0
    return num_video if spec.drop == "video" else int(round(spec.ratio * num_video))


def kept_positions(layout: TokenLayout, spec: PruneSpec, length: int, received=None) -> torch.Tensor:
    """Positions left after layer L: everything but the dropped video tokens (least_attended: the ones that received
    least attention in layer L; ties keep the earlier position)."""
    video = torch.as_tensor(layout.positions("video"))
    drop = dropped_count(spec, len(video))
    keep = torch.ones(length, dtype=torch.bool)
    if drop == 0:
        return torch.arange(length)
    if spec.drop == "video":
        keep[video] = False
    else:
        scores = received[video].double()
        order = torch.argsort(scores, stable=True)  # ascending: least attended first, earlier position first on ties
        keep[video[order[:drop]]] = False
    return torch.nonzero(keep).flatten()


def _language_model_call(adapter, prepared: PreparedInput) -> dict:
    """The keyword arguments the model's own forward gives its language model (the forward is stopped there)."""
    lm = adapter.language_model._module
    captured = {}

    def grab(module, args, kwargs):
        captured.update(kwargs)
        if args:
            raise RuntimeError(f"{type(module).__name__} got positional arguments; expected keyword arguments")
        raise _StopForward

    handle = lm.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        adapter.hf_model(**prepared.inputs)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if "inputs_embeds" not in captured or captured["inputs_embeds"] is None:
        raise RuntimeError(f"{type(adapter).__name__}: the language model was not called with inputs_embeds")
    for name in ("cache", "past_key_values", "use_cache", "input_ids"):
        captured.pop(name, None)
    return captured


class _Session:
    """Hooks and state of one pruned prefill (and the decoding steps that follow it)."""

    def __init__(self, adapter, layout: TokenLayout, spec: PruneSpec, length: int, record_hidden: bool, rank_rows):
        self.adapter = adapter
        self.lm = adapter.language_model._module
        self.layers = list(self.lm.layers)
        self.layout = layout
        self.spec = spec
        self.length = length
        self.drop_layer = spec.drop_after if dropped_count(spec, len(layout.positions("video"))) else None
        self.kept = torch.arange(length)
        self.frame_of = frame_index(layout, length)
        self.video_start = int(layout["video"].start)
        self.record_hidden = record_hidden
        self.hidden: list[torch.Tensor] = []
        self.decoding = False
        self.generated = 0
        rank_layer = self.drop_layer if spec.drop == "least_attended" else None
        rank_weights = None
        if rank_layer is not None:
            rows = length if rank_rows is None else int(rank_rows)
            rank_weights = (torch.arange(length) < rows).float()
        self.attention = PruneAttention(
            previous=adapter.text_config._attn_implementation,
            frame_local_layers=frozenset(spec.frame_local_layers),
            rank_layer=rank_layer,
            groups_for=self.groups_for,
            rank_weights=rank_weights,
        )
        self.handles = []
        self.saved_rope_deltas = {
            module: module.rope_deltas for module in adapter.hf_model.modules() if hasattr(module, "rope_deltas")
        }

    # ---- the layer's sequence --------------------------------------------------------------------------------
    def positions(self, layer: int) -> torch.Tensor:
        """Original positions of the prompt rows layer ``layer`` runs on."""
        if self.drop_layer is not None and layer > self.drop_layer:
            return self.kept
        return torch.arange(self.length)

    def groups_for(self, layer: int, rows: int):
        positions = self.positions(layer)
        if len(positions) != rows:
            raise RuntimeError(f"layer {layer}: attention got {rows} rows, the pruned sequence has {len(positions)}")
        return frame_local_groups(positions, self.video_start, self.frame_of)

    # ---- hooks ------------------------------------------------------------------------------------------------
    def __enter__(self):
        # the model's own attention where nothing differs from it (so an unpruned run is its own computation)
        custom = self.attention.frame_local_layers or self.attention.rank_layer is not None
        self.attention_block = pruning_attention(self.adapter.text_config, self.attention) if custom else None
        if self.attention_block is not None:
            self.attention_block.__enter__()
        try:
            for i, layer in enumerate(self.layers):
                if self.drop_layer is not None and i > self.drop_layer:
                    self.handles.append(layer.register_forward_pre_hook(self._cut_inputs(i), with_kwargs=True))
                if self.record_hidden:
                    self.handles.append(layer.register_forward_hook(self._record))
            if hasattr(self.lm, "_deepstack_process"):  # Qwen3-VL adds visual features after its first layers
                own = self.lm._deepstack_process
                self.lm._deepstack_process = self._deepstack(own)
                self.deepstack_patched = True
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.handles = []
        if getattr(self, "deepstack_patched", False):
            del self.lm._deepstack_process  # the instance attribute: the class's method shows again
            self.deepstack_patched = False
        for module, value in self.saved_rope_deltas.items():
            module.rope_deltas = value
        if self.attention_block is not None:
            self.attention_block.__exit__(*exc)
        return False

    def _record(self, module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        if not self.decoding:
            self.hidden.append(hidden[0].detach().clone())

    def _deepstack(self, own):
        def process(hidden_states, visual_pos_masks, visual_embeds):
            if hidden_states.shape[1] != visual_pos_masks.shape[1]:  # a layer after the drop: kept positions only
                kept = self.kept.to(visual_pos_masks.device)
                rank = torch.cumsum(visual_pos_masks[0].long(), 0) - 1
                still = kept[visual_pos_masks[0, kept]]
                visual_embeds = visual_embeds[rank[still]]
                visual_pos_masks = visual_pos_masks[:, kept]
            return own(hidden_states, visual_pos_masks, visual_embeds)

        return process

    def _choose_kept(self):
        received = self.attention.received
        if self.spec.drop == "least_attended" and received is None:
            raise RuntimeError(f"layer {self.drop_layer} recorded no attention to rank the video tokens")
        self.kept = kept_positions(self.layout, self.spec, self.length, received)

    def _cut_inputs(self, layer: int):
        first = layer == self.drop_layer + 1

        def hook(module, args, kwargs):
            if self.decoding:
                mask = kwargs.get("attention_mask")
                if isinstance(mask, torch.Tensor):
                    total = mask.shape[-1]
                    keys = torch.cat([self.kept, torch.arange(self.length, total)]).to(mask.device)
                    kwargs["attention_mask"] = mask.index_select(-1, keys)
                return args, kwargs
            if first:
                self._choose_kept()
            kept = self.kept
            if first:
                if args:
                    args = (args[0].index_select(1, kept.to(args[0].device)),) + tuple(args[1:])
                else:
                    kwargs["hidden_states"] = kwargs["hidden_states"].index_select(
                        1, kept.to(kwargs["hidden_states"].device)
                    )
            cos, sin = kwargs["position_embeddings"]
            kwargs["position_embeddings"] = (
                cos.index_select(-2, kept.to(cos.device)),
                sin.index_select(-2, kept.to(sin.device)),
            )
            mask = kwargs.get("attention_mask")
            if isinstance(mask, torch.Tensor):
                kwargs["attention_mask"] = mask.index_select(-2, kept.to(mask.device)).index_select(
                    -1, kept.to(mask.device)
                )
            elif mask is not None:
                raise TypeError(f"layer {layer}: unexpected attention_mask of type {type(mask).__name__}")
            position_ids = kwargs.get("position_ids")
            if isinstance(position_ids, torch.Tensor):
                kwargs["position_ids"] = position_ids.index_select(-1, kept.to(position_ids.device))
            return args, kwargs

        return hook


def _new_cache(lm):
    from transformers import DynamicCache

    return DynamicCache(config=lm.config)


def _logits(adapter, last_hidden: torch.Tensor) -> torch.Tensor:
    logits = adapter.lm_head._module(last_hidden[:, -1])[0]
    return logits.to(torch.promote_types(logits.dtype, torch.float32))  # half precision -> float32; float64 stays


def pruned_prefill(
    adapter,
    prepared: PreparedInput,
    spec: PruneSpec,
    *,
    hidden_states: bool = False,
    rank_rows: int | None = None,
    _session_out: list | None = None,
) -> PrunedPrefill:
    """Run the prompt through the model with ``spec``'s pruning (module notes); the logits at its last position.

    ``rank_rows`` (least_attended): only the first ``rank_rows`` query rows of layer L rank the video tokens (default:
    every row). A full recompute of prompt + generated tokens passes the prompt's length, so that it ranks as the
    cached generation did (from the prompt alone)."""
    layout = prepared.layout
    check_spec(adapter, layout, spec)
    length = int(prepared.inputs["input_ids"].shape[-1])
    if prepared.inputs["input_ids"].shape[0] != 1:
        raise ValueError("pruned_prefill runs one sample (batch size 1)")
    with torch.no_grad():
        session = _Session(adapter, layout, spec, length, hidden_states, rank_rows)
        with session:
            call = _language_model_call(adapter, prepared)
            cache = _new_cache(session.lm)
            out = session.lm(**call, cache=cache, use_cache=True)
            if session.drop_layer == adapter.num_layers - 1:  # no layer after L: nothing left out, the set still named
                session._choose_kept()
            logits = _logits(adapter, out.last_hidden_state)
        position_ids = call.get("position_ids")
        if position_ids is None:
            next_position, shape = length, (1,)
        else:
            next_position, shape = int(position_ids.max()) + 1, tuple(position_ids.shape[:-2]) + (1,)
        if position_ids is not None and position_ids.ndim == 2:
            shape = (1,)
        result = PrunedPrefill(
            logits=logits,
            kept=session.kept.clone(),
            hidden_states=session.hidden if hidden_states else None,
            past_key_values=cache,
            prompt_len=length,
            next_position=next_position,
            received=session.attention.received,
            position_shape=shape,
        )
    if _session_out is not None:
        _session_out.append(session)
    return result


def _eos_ids(adapter) -> set[int]:
    ids = set()
    for source in (getattr(adapter.hf_model, "generation_config", None), adapter.tokenizer):
        value = getattr(source, "eos_token_id", None)
        if value is None:
            continue
        ids.update([value] if isinstance(value, int) else list(value))
    return ids


def greedy_run(adapter, prepared: PreparedInput, spec: PruneSpec, *, max_new_tokens: int, stop_at_eos=True):
    """Greedy decoding from the pruned prefill with the KV cache; the tokens and every step's logits."""
    sessions: list = []
    prefill = pruned_prefill(adapter, prepared, spec, _session_out=sessions)
    session = sessions[0]
    cache = prefill.past_key_values
    eos = _eos_ids(adapter) if stop_at_eos else set()
    tokens, all_logits = [], [prefill.logits]
    logits = prefill.logits
    embed = adapter.hf_model.get_input_embeddings()
    device = prepared.inputs["input_ids"].device
    with torch.no_grad(), session:
        session.decoding = True
        for step in range(max_new_tokens):
            token = int(torch.argmax(logits))
            tokens.append(token)
            if token in eos or step == max_new_tokens - 1:
                break
            ids = torch.tensor([[token]], device=device)
            position = torch.full(
                prefill.position_shape + (1,), prefill.next_position + step, dtype=torch.long, device=device
            )
            out = session.lm(inputs_embeds=embed(ids), position_ids=position, cache=cache, use_cache=True)
            logits = _logits(adapter, out.last_hidden_state)
            all_logits.append(logits)
    return GreedyRun(tokens=tokens, logits=all_logits, prefill=prefill)


def pruned_generate(adapter, prepared: PreparedInput, spec: PruneSpec, *, max_new_tokens: int) -> list[int]:
    """Greedy generation (KV cache) with ``spec``'s pruning; stops after the model's end-of-sequence token."""
    return greedy_run(adapter, prepared, spec, max_new_tokens=max_new_tokens).tokens


def extend_prepared(prepared: PreparedInput, tokens: list[int]) -> PreparedInput:
    """The prompt followed by ``tokens`` (for a full recompute): input ids grown, the attention mask with ones,
    other per-position integer inputs (token type ids) with zeros; the layout's spans stay (``last`` moves)."""
    if not tokens:
        return prepared
    length = int(prepared.inputs["input_ids"].shape[-1])
    new = torch.tensor([tokens], dtype=prepared.inputs["input_ids"].dtype, device=prepared.inputs["input_ids"].device)
    inputs = {}
    for name, value in prepared.inputs.items():
        if (
            isinstance(value, torch.Tensor)
            and value.ndim == 2
            and value.shape == (1, length)
            and not value.is_floating_point()
        ):
            if name == "input_ids":
                extra = new
            elif name == "attention_mask":
                extra = torch.ones_like(new, dtype=value.dtype)
            else:
                extra = torch.zeros_like(new, dtype=value.dtype)
            value = torch.cat([value, extra.to(value.dtype)], dim=1)
        inputs[name] = value
    layout = prepared.layout.with_spans(seq_len=length + len(tokens))
    return PreparedInput(inputs=inputs, layout=layout, text=prepared.text, segments=prepared.segments)
