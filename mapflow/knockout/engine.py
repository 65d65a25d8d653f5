"""Run many knockout configurations of one sample as cheaply as exact computation allows.

A configuration is (blocked edges, layers to cut them in). Four facts make most of a naive sweep unnecessary:

- The vision tower and the merge of video features into the text are the same for every configuration: the clean run
  records the language model's ``inputs_embeds`` once and every knockout starts from them.
- A knockout changes nothing at positions before its first blocked query row ``p`` (causal attention): the clean
  run's keys/values of positions ``< p`` serve every row as one shared prefix (`mapflow.knockout.suffix_attention`, no per-row
  copy) and only the suffix ``p..L-1`` is computed.
- It changes nothing before its first knocked-out layer ``s`` either: a row joins the forward at layer ``s`` with the
  clean hidden states (layers below every row's ``s`` are nnsight-``skip``ped).
- Only the last position's logits are read: the last layer computes that position alone.

`run_pack` packs the suffixes of rows with any ``p`` along the sequence of one batch row (no padding); `run_batch`
stacks rows of one ``p`` as batch rows (for models whose suffix arguments are per row). Attention masks are built
per distinct blocked pattern, never per row and layer, and only for rows that cut the layer. ``naive`` runs one full
forward per configuration from the raw inputs (vision included), as the paper's code does; tests prove all give the
same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nnsight
import torch

from ..models.base import PreparedInput, VideoLLMAdapter
from .masks import apply_layer_masks, head_blocked
from .planner import (  # noqa: F401 (re-exported)
    KnockoutConfig,
    check_heads,
    entry_layer,
    max_batch_rows,
    plan_batches,
    plan_packs,
    record_out_of_memory,
)
from .suffix_attention import SuffixBatch, SuffixPack, suffix_attention

PLANS = ("auto", "naive")


@dataclass
class CleanState:
    """What the clean run leaves for the knockouts to reuse."""

    logits: torch.Tensor  # (L, V) at every position, float32
    inputs_embeds: torch.Tensor  # (1, L, D): text embeddings with the video features merged in
    layer_outputs: list[torch.Tensor]  # clean output of every decoder layer, (1, L, D)
    keys: list[torch.Tensor]  # per layer (1, kv_heads, L, head_dim)
    values: list[torch.Tensor]
    # the language model's clean-call arguments the adapter names (e.g. Qwen-VL's 3-D position ids)
    language_model_kwargs: dict = field(default_factory=dict)


def clean_state(adapter: VideoLLMAdapter, prepared: PreparedInput) -> CleanState:
    from transformers import DynamicCache

    cache = DynamicCache(config=adapter.text_config)
    names = adapter.clean_language_model_kwargs
    with torch.no_grad(), adapter.trace(prepared, cache=cache, use_cache=True):
        lm_kwargs = adapter.language_model.inputs[1]
        embeds = lm_kwargs["inputs_embeds"].save()
        extra = nnsight.save({name: lm_kwargs[name] for name in names})
        outputs = nnsight.save([adapter.layers[i].output for i in range(adapter.num_layers)])
        logits = adapter.lm_head.output[0].save()
    return CleanState(
        logits=logits.detach().float(),
        inputs_embeds=embeds.detach(),
        layer_outputs=[o.detach() for o in outputs],
        keys=[layer.keys for layer in cache.layers],
        values=[layer.values for layer in cache.layers],
        language_model_kwargs={k: v for k, v in extra.items() if v is not None},
    )


def run_batch(adapter: VideoLLMAdapter, clean: CleanState, configs: list[KnockoutConfig]) -> torch.Tensor:
    """Last-position logits (rows, V) of several configurations, computed from their earliest first changed row.

    Rows enter the batch at their own first knocked-out layer (before it they equal the clean run, whose hidden
    states they join with), so a batch mixing windows computes no clean layers; adapters whose suffix arguments are
    per row (`suffix_kwargs_broadcast` False) start every row at the batch's earliest layer instead.
    """
    num_layers = adapter.num_layers
    start = min(c.first_row for c in configs)  # rows that change later just recompute clean positions: exact
    order = sorted(range(len(configs)), key=lambda r: entry_layer(configs[r], num_layers))
    configs = [configs[r] for r in order]
    entries = [entry_layer(c, num_layers) for c in configs]
    if not adapter.suffix_kwargs_broadcast:
        entries = [entries[0]] * len(entries)
    embeds = clean.inputs_embeds[:, start:]
    batch = SuffixBatch.build(
        start,
        clean.keys,
        clean.values,
        [c.blocked for c in configs],
        [c.layers for c in configs],
        entries,
        embeds.dtype,
        embeds.device,
        [c.heads for c in configs],
    )
    extra = _suffix_kwargs(adapter, clean, start, 1 if adapter.suffix_kwargs_broadcast else len(configs))
    first = entries[0]
    joining = {layer: entries.count(layer) for layer in sorted(set(entries)) if first < layer < num_layers}
    layers = adapter.layers
    with (
        torch.no_grad(),
        suffix_attention(adapter.text_config),
        adapter.model.trace(
            inputs_embeds=embeds.expand(entries.count(first), -1, -1),
            use_cache=False,
            logits_to_keep=1,
            suffix_batch=batch,
        ),
    ):
        lm_args, lm_kwargs = adapter.language_model.inputs
        adapter.language_model.inputs = (lm_args, {**lm_kwargs, **extra})
        for i in range(min(first, num_layers)):
            layers[i].skip(clean.layer_outputs[i][:, start:].expand(entries.count(first), -1, -1))
        for i, count in joining.items():
            args, kwargs = layers[i].inputs
            hidden = args[0] if args else kwargs["hidden_states"]
            hidden = torch.cat([hidden, clean.layer_outputs[i - 1][:, start:].expand(count, -1, -1)])
            if args:
                layers[i].inputs = ((hidden, *args[1:]), kwargs)
            else:
                layers[i].inputs = (args, {**kwargs, "hidden_states": hidden})
        # in the last layer only the last position reaches the logits: its attention computes that query alone (see
        # suffix_attention) and its MLP that position alone (the residual sum broadcasts it over the others)
        mlp = layers[num_layers - 1].mlp
        mlp.input = mlp.input[:, -1:]
        logits = adapter.lm_head.output[:, -1].save()
    out = torch.empty_like(logits, dtype=torch.float32)
    out[torch.tensor(order)] = logits.detach().float()
    return out


def _suffix_kwargs(adapter: VideoLLMAdapter, clean: CleanState, start: int, rows: int) -> dict:
    """The language model's arguments for a forward of positions ``start..``: it runs without a cache, so it is told
    its positions (e.g. Qwen-VL's clean 3-D rotary positions)."""
    if clean.language_model_kwargs:
        return adapter.suffix_language_model_kwargs(clean.language_model_kwargs, start, rows)
    length = clean.inputs_embeds.shape[1]
    return {"position_ids": torch.arange(start, length, device=clean.inputs_embeds.device).expand(rows, -1)}


def run_pack(adapter: VideoLLMAdapter, clean: CleanState, configs: list[KnockoutConfig]) -> torch.Tensor:
    """Last-position logits (rows, V) of configurations with any suffix starts, in one forward of batch size 1.

    Each row contributes its positions ``first_row..L-1`` to one packed sequence (no padding, no recomputed clean
    positions), in the order rows join: a row enters at its first knocked-out layer with the clean hidden states, so
    layer ``i`` computes the first ``T_i`` packed positions and gets its rotary tables cut to them. Attention runs per
    suffix start (`SuffixPack`); the last layer computes each row's last position alone.
    """
    num_layers = adapter.num_layers
    order = sorted(range(len(configs)), key=lambda r: entry_layer(configs[r], num_layers))
    configs = [configs[r] for r in order]
    entries = [entry_layer(c, num_layers) for c in configs]
    seq_len = clean.inputs_embeds.shape[1]
    starts = [c.first_row for c in configs]
    ends = torch.tensor([seq_len - s for s in starts]).cumsum(0).tolist()  # packed end of each row
    active_rows = [sum(entry <= layer for entry in entries) for layer in range(num_layers)]
    active_tokens = [ends[n - 1] if n else 0 for n in active_rows]
    device, dtype = clean.inputs_embeds.device, clean.inputs_embeds.dtype
    by_start: dict[int, list[int]] = {}
    for r, start in enumerate(starts):
        by_start.setdefault(start, []).append(r)
    batches = [
        SuffixBatch.build(
            start,
            clean.keys,
            clean.values,
            [configs[r].blocked for r in members],
            [configs[r].layers for r in members],
            [entries[r] for r in members],
            dtype,
            device,
            [configs[r].heads for r in members],
        )
        for start, members in by_start.items()
    ]
    # per packed position: its row, and its row's suffix start
    row_of = torch.repeat_interleave(
        torch.arange(len(configs), device=device), torch.tensor([seq_len - s for s in starts], device=device)
    )
    start_of = torch.tensor(starts, device=device)[row_of]
    token_index, cached = [], {}
    for layer in range(num_layers):
        active = active_rows[layer]
        if active not in cached:
            index = [torch.nonzero((start_of == start) & (row_of < active)).flatten() for start in by_start]
            cached[active] = [i if len(i) else None for i in index]
        token_index.append(cached[active])
    pack = SuffixPack(batches, token_index, [seq_len - start for start in by_start])

    def packed(tensor, rows):  # (1, L, D) clean states -> the given rows' suffixes, packed
        return torch.cat([tensor[:, starts[r] :] for r in rows], 1)

    extra = _packed_suffix_kwargs(adapter, clean, starts)
    last_positions = torch.tensor([end - 1 for end in ends], device=device)
    first = entries[0]
    layers = adapter.layers
    with (
        torch.no_grad(),
        suffix_attention(adapter.text_config),
        adapter.model.trace(
            inputs_embeds=packed(clean.inputs_embeds, range(active_rows[first])),
            use_cache=False,
            logits_to_keep=last_positions,
            suffix_pack=pack,
        ),
    ):
        lm_args, lm_kwargs = adapter.language_model.inputs
        adapter.language_model.inputs = (lm_args, {**lm_kwargs, **extra})
        for i in range(first):
            layers[i].skip(packed(clean.layer_outputs[i], range(active_rows[first])))
        for i in range(first, num_layers):
            joins = i > first and active_rows[i] > active_rows[i - 1]
            if not joins and active_tokens[i] == ends[-1]:
                continue
            args, kwargs = layers[i].inputs
            hidden = args[0] if args else kwargs["hidden_states"]
            if joins:
                hidden = torch.cat(
                    [hidden, packed(clean.layer_outputs[i - 1], range(active_rows[i - 1], active_rows[i]))], 1
                )
            kwargs = {
                **kwargs,
                "position_embeddings": tuple(t[:, : active_tokens[i]] for t in kwargs["position_embeddings"]),
            }
            layers[i].inputs = ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})
        # only each row's last position reaches the logits: the last layer's MLP computes those alone
        mlp = layers[num_layers - 1].mlp
        mlp.input = mlp.input[:, last_positions]
        trimmed = mlp.output
        mlp.output = trimmed.new_zeros(1, ends[-1], trimmed.shape[-1]).index_copy(1, last_positions, trimmed)
        logits = adapter.lm_head.output[0].save()
    if logits.shape[0] != len(configs):  # a model that ignores positional logits_to_keep (VideoLLaMA3)
        logits = logits[last_positions]
    out = torch.empty_like(logits, dtype=torch.float32)
    out[torch.tensor(order)] = logits.detach().float()
    return out


def _packed_suffix_kwargs(adapter: VideoLLMAdapter, clean: CleanState, starts: list[int]) -> dict:
    """`_suffix_kwargs` of every row (one batch row each), joined along the sequence."""
    per_row = [_suffix_kwargs(adapter, clean, start, 1) for start in starts]
    return {name: torch.cat([kwargs[name] for kwargs in per_row], -1) for name in per_row[0]}


def run_naive(adapter: VideoLLMAdapter, prepared: PreparedInput, config: KnockoutConfig | None = None) -> torch.Tensor:
    """One full forward from the raw inputs (vision tower included), as the paper's code runs every cell; without a
    configuration, the clean run."""
    # a dict of tensors, not the configuration, goes into the traced block: a remote trace ships what the block
    # reads, and the configuration object (a dataclass with a cached property) does not serialize
    if config is None:
        return run_layer_masks(adapter, prepared, {})
    blocked = config.blocked if config.heads is None else head_blocked(config.blocked, config.heads, adapter.num_heads)
    return run_layer_masks(adapter, prepared, {i: blocked for i in config.layers})


def clean_readout(adapter: VideoLLMAdapter, prepared: PreparedInput, gt_token: int) -> torch.Tensor:
    """The clean run's (pred, p_pred, p_answer) at the last position, float64: what a server-side sample measurement
    returns instead of logits (`StudyContext.clean_from` turns it into a CleanRun)."""
    probs = run_naive(adapter, prepared).softmax(-1)
    pred = int(probs.argmax())
    return torch.tensor([pred, float(probs[pred]), float(probs[gt_token])], dtype=torch.float64)


def run_knockouts(
    adapter: VideoLLMAdapter,
    prepared: PreparedInput,
    configs: list[KnockoutConfig],
    *,
    plan: str = "auto",
    clean: CleanState | None = None,
    max_rows: int | None = None,
) -> torch.Tensor:
    """Last-position logits (n_configs, V), float32, in the order of ``configs``."""
    if plan not in PLANS:
        raise ValueError(f"plan must be one of {PLANS}, got '{plan}'")
    if not configs:
        return torch.zeros(0, adapter.text_config.vocab_size)
    for config in configs:
        check_heads(config.heads, adapter.num_heads)
    if plan == "naive":
        return torch.stack([run_naive(adapter, prepared, c) for c in configs])
    clean = clean or clean_state(adapter, prepared)
    out: list[torch.Tensor | None] = [None] * len(configs)
    to_run = []
    for index, config in enumerate(configs):
        if config.cuts_nothing:  # exactly the clean run, no forward needed
            out[index] = clean.logits[-1]
        else:
            to_run.append(index)
    # packing needs suffix arguments that serve any row; otherwise rows of one suffix start share a batch
    plan, run = (plan_packs, run_pack) if adapter.suffix_kwargs_broadcast else (plan_batches, run_batch)
    for batch in plan([configs[i] for i in to_run], adapter, prepared.layout.seq_len, max_rows):
        batch = [to_run[i] for i in batch]
        logits = run_within_memory(run, adapter, clean, [configs[i] for i in batch])
        for row, index in enumerate(batch):
            out[index] = logits[row]
    return torch.stack(out)


def run_within_memory(run, adapter: VideoLLMAdapter, clean: CleanState, configs: list[KnockoutConfig]) -> torch.Tensor:
    """``run(adapter, clean, configs)``; a forward that runs out of memory is split in two halves and retried (each
    half again, down to single rows), and the planner learns to plan smaller forwards for this model. A forward only
    returns logits, nothing is written before it ends: a failed attempt leaves no trace in the results."""
    try:
        return run(adapter, clean, configs)
    except Exception as err:
        cause = _out_of_memory_cause(err)
        if cause is None:
            raise
        message = str(cause).splitlines()[0] if str(cause) else "out of memory"
    # outside the except block: the traceback (and the activations it holds) is gone before the retry
    seq_len = clean.inputs_embeds.shape[1]
    tokens = sum(seq_len - c.first_row for c in configs)
    if len(configs) == 1:
        raise torch.OutOfMemoryError(
            f"one knockout row ({tokens} suffix positions of a {seq_len}-token sample) does not fit in free memory "
            f"({message}): use fewer frames, spread the model with --device-map auto, or lower other memory use"
        )
    record_out_of_memory(adapter, tokens)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    half = len(configs) // 2
    return torch.cat(
        [run_within_memory(run, adapter, clean, configs[:half]), run_within_memory(run, adapter, clean, configs[half:])]
    )


def _out_of_memory_cause(err: BaseException) -> torch.OutOfMemoryError | None:
    """The out-of-memory error behind ``err``: itself, or one it was raised from (a tracer may wrap what the model
    raised inside the trace)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, torch.OutOfMemoryError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def run_layer_masks(
    adapter: VideoLLMAdapter, prepared: PreparedInput, blocked_by_layer: dict[int, torch.Tensor]
) -> torch.Tensor:
    """Last-position logits of one full forward where layer ``i`` cuts its own edges ``blocked_by_layer[i]`` (the
    effective-pathway masks: a different edge set per layer). Layers not listed run unchanged."""
    with torch.no_grad(), adapter.trace(prepared):
        apply_layer_masks(adapter.layers, blocked_by_layer)
        logits = adapter.lm_head.output[0, -1].save()
    # half precision comes back as float32; a float64 model keeps float64 (the references exactness tests compare to)
    return logits.detach().to(torch.promote_types(logits.dtype, torch.float32))
