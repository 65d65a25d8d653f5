"""Which knockout configurations run together, within memory: the engine's planner.

A configuration changes nothing before its first blocked query row (its suffix start) and before its first
knocked-out layer (its entry layer). Packs (`plan_packs`) hold rows of any suffix starts, packed along the sequence;
batches (`plan_batches`, for models whose suffix arguments are per row) hold rows of one suffix start.
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass

import torch

from ..errors import KnockoutConfigError
from ..models.base import VideoLLMAdapter
from .suffix_attention import uses_dense


@dataclass(frozen=True)
class KnockoutConfig:
    blocked: torch.Tensor  # bool (L, L), True = query row may not read key column
    layers: tuple[int, ...]
    heads: tuple[int, ...] | None = None  # cut only in these query heads; None: in all heads

    @property
    def cuts_nothing(self) -> bool:
        return not self.layers or _first_blocked_row(self.blocked) is None

    @property  # the planner asks often: `_first_blocked_row` scans each matrix once (no cached_property: its lock
    def first_row(self) -> int:  # would keep the class from shipping to a server inside a sample request)
        """The first query position the configuration changes (positions before it keep their clean values)."""
        row = _first_blocked_row(self.blocked)
        return row if row is not None and self.layers else self.blocked.shape[0] - 1


# A sweep shares one blocked matrix among a flow's layers: scan each matrix once (keyed by identity; an entry goes
# with its matrix).
_FIRST_BLOCKED_ROW: dict[int, tuple[weakref.ref, int | None]] = {}


def check_heads(heads, num_heads: int, option: str = "--heads") -> tuple[int, ...] | None:
    """The head restriction as a sorted tuple, or an error naming the option and the model's head range."""
    if heads is None:
        return None
    heads = tuple(sorted({int(h) for h in heads}))
    bad = [h for h in heads if not 0 <= h < num_heads]
    if not heads or bad:
        raise KnockoutConfigError(
            f"{option}: head(s) {bad or 'none'} out of range; this model has heads 0..{num_heads - 1}"
        )
    return heads


def _first_blocked_row(blocked: torch.Tensor) -> int | None:
    known = _FIRST_BLOCKED_ROW.get(id(blocked))
    if known is not None and known[0]() is blocked:
        return known[1]
    rows = torch.nonzero(blocked.any(-1))
    row = int(rows[0]) if len(rows) else None
    key = id(blocked)
    _FIRST_BLOCKED_ROW[key] = (weakref.ref(blocked, lambda _: _FIRST_BLOCKED_ROW.pop(key, None)), row)
    return row


def max_batch_rows(seq_len: int, suffix_len: int, adapter: VideoLLMAdapter) -> int:
    """Rows per batch that keep the extra activations within a quarter of free memory (at most 256) and within the
    token limit an earlier out-of-memory taught (`record_out_of_memory`)."""
    per_row = _row_bytes(adapter, seq_len)(suffix_len)
    rows = min(256, free_memory_bytes(adapter) // 4 // max(per_row, 1), pack_token_limit(adapter) // suffix_len)
    return int(max(1, rows))


# A cap on the memory the planner may plan with (bytes, or a size such as "8GiB"): on CPU the free memory the OS
# reports is shared with everything else on the machine; on a GPU it lowers what `mem_get_info` says.
MEMORY_BUDGET_ENV = "MAPFLOW_MEMORY_BUDGET"
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_bytes(text: str) -> int:
    """``"8GiB"``, ``"512 MiB"``, ``"2e9"`` -> bytes."""
    value = str(text).strip().lower()
    number = value.rstrip("kmgtib ")
    unit = value[len(number) :].strip()
    try:
        if unit not in _UNITS:
            raise ValueError
        size = int(float(number) * _UNITS[unit])
    except ValueError:
        raise ValueError(f"cannot read a memory size from {text!r} (e.g. 8GiB, 512MiB, 2e9)") from None
    if size <= 0:
        raise ValueError(f"a memory size must be positive, got {text!r}")
    return size


def model_devices(adapter: VideoLLMAdapter) -> set[torch.device]:
    """Every device holding part of the model (several under a multi-device ``device_map``)."""
    return {param.device for param in adapter.hf_model.parameters()}


def free_memory_bytes(adapter: VideoLLMAdapter) -> int:
    """Free memory of the tightest device the model runs on (CUDA: `torch.cuda.mem_get_info`; CPU: the available
    physical pages), capped by `MEMORY_BUDGET_ENV` when set."""
    free = []
    for device in model_devices(adapter):
        if device.type == "cuda":
            free.append(int(torch.cuda.mem_get_info(device)[0]))
        else:
            try:
                free.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
            except (ValueError, OSError):
                free.append(4 * 1024**3)
    budget = os.environ.get(MEMORY_BUDGET_ENV)
    if budget:
        free.append(parse_bytes(budget))
    return min(free)


# Per adapter (by id): the packed positions of the smallest forward that ran out of memory, halved (see `engine`).
# A plain dict of ints: remote requests ship the planner's globals, and weak references cannot be serialized. An id
# reused by a later adapter only makes its packs smaller, never its numbers different.
_LEARNED_TOKEN_LIMIT: dict[int, int] = {}


def record_out_of_memory(adapter: VideoLLMAdapter, tokens: int) -> None:
    """A forward of ``tokens`` packed positions ran out of memory: later plans for this model stay below half."""
    _LEARNED_TOKEN_LIMIT[id(adapter)] = max(1, min(pack_token_limit(adapter), tokens // 2))


def pack_token_limit(adapter: VideoLLMAdapter) -> int:
    return _LEARNED_TOKEN_LIMIT.get(id(adapter), PACK_TOKEN_LIMIT)


# The fixed cost of one traced forward, in computed (row, position) pairs; measured on the CPU organism it is ~90.
# Two groups with different suffix starts are merged into one forward when recomputing the extra positions costs
# less than that (the merged rows start at the earlier position: exact, just more work).
FORWARD_OVERHEAD_TOKENS = 128
# Rows x suffix positions per forward. Past this, batching buys no more speed, while wide batches mix windows, so
# more layers need an explicit mask (a slower attention kernel) and fewer leading layers can be skipped.
BATCH_TOKEN_BUDGET = 4096


def plan_batches(
    configs: list[KnockoutConfig], adapter: VideoLLMAdapter, seq_len: int, max_rows: int | None = None
) -> list[list[int]]:
    """Group configuration indices into batches: configurations sharing their suffix start go together (ordered by
    first knocked-out layer), and small groups are merged; a batch starts at its earliest member's first row."""
    num_layers = adapter.num_layers
    by_start: dict[int, list[int]] = {}
    for index, config in enumerate(configs):
        by_start.setdefault(config.first_row, []).append(index)
    groups: list[tuple[int, list[int]]] = []
    for start, members in sorted(by_start.items(), reverse=True):  # cheapest (latest start) first
        if groups and len(groups[-1][1]) * (groups[-1][0] - start) <= FORWARD_OVERHEAD_TOKENS:
            groups[-1] = (start, groups[-1][1] + members)  # its rows recompute the positions in between
        else:
            groups.append((start, list(members)))
    batches = []
    for start, members in groups:
        members.sort(key=lambda i: entry_layer(configs[i], num_layers))
        rows = max_rows or min(
            max_batch_rows(seq_len, seq_len - start, adapter), max(1, BATCH_TOKEN_BUDGET // (seq_len - start))
        )
        batches.extend(members[i : i + rows] for i in range(0, len(members), rows))
    return batches


def entry_layer(config: KnockoutConfig, num_layers: int) -> int:
    """The first layer a configuration changes: below it the row is the clean run."""
    return min(config.layers, default=num_layers)


def _row_bytes(adapter: VideoLLMAdapter, seq_len: int):
    """Working memory of one row as a function of its suffix size: one layer's activations (no cache is built, the
    prefix is shared); the few-query attention path adds float32 scores, probabilities and bias over all keys."""
    config = adapter.text_config
    element = torch.finfo(adapter.hf_model.dtype).bits // 8
    per_position = (config.hidden_size * 16 + config.intermediate_size * 3) * element
    dense_per_position = 3 * adapter.num_heads * seq_len * 4
    return lambda size: size * (per_position + (dense_per_position if uses_dense(size, seq_len) else 0))


# Packed positions per forward: bounds the activations of a pack whatever the free memory says.
PACK_TOKEN_LIMIT = 1 << 16


def plan_packs(
    configs: list[KnockoutConfig], adapter: VideoLLMAdapter, seq_len: int, max_rows: int | None = None
) -> list[list[int]]:
    """Configuration indices per packed forward (`run_pack`): as many rows as a quarter of free memory and
    `PACK_TOKEN_LIMIT` (or a limit an out-of-memory taught) allow; rows of one suffix start stay together where they
    can."""
    budget = free_memory_bytes(adapter) // 4
    token_limit = pack_token_limit(adapter)
    row_bytes = _row_bytes(adapter, seq_len)
    packs: list[list[int]] = []
    used = tokens = 0
    for index in sorted(range(len(configs)), key=lambda i: -configs[i].first_row):
        size = seq_len - configs[index].first_row
        cost = row_bytes(size)
        if not packs or used + cost > budget or tokens + size > token_limit or len(packs[-1]) == max_rows:
            packs.append([])
            used = tokens = 0
        packs[-1].append(index)
        used, tokens = used + cost, tokens + size
    return packs


def work_of_plan(configs, adapter, seq_len) -> tuple[int, int]:
    """Forwards and token-layers the optimized plan computes for ``configs`` (clean pass included): the planner's
    own accounting, as `run_knockouts` groups the cells (used by `mapflow bench` and `mapflow calibrate`)."""
    num_layers = adapter.num_layers
    forwards, token_layers = 1, seq_len * num_layers
    live = [c for c in configs if not c.cuts_nothing]
    packed = adapter.suffix_kwargs_broadcast  # as run_knockouts decides
    for group in (plan_packs if packed else plan_batches)(live, adapter, seq_len):
        rows = [live[i] for i in group]
        entries = [entry_layer(c, num_layers) for c in rows]
        starts = [c.first_row for c in rows]
        if not packed:  # every row starts at the batch's first layer and first row
            entries, starts = [min(entries)] * len(rows), [min(starts)] * len(rows)
        forwards += 1
        token_layers += sum((seq_len - start) * (num_layers - entry) for start, entry in zip(starts, entries))
    return forwards, token_layers
