"""Attention for a batch of knockout rows computed on top of one shared clean prefix, without copying or masking
what need not be copied or masked.

A batch computes query positions ``start..L-1`` (the suffix) for many configurations (rows). Every row attends to the
same clean keys/values of positions ``< start`` (the prefix) and to its own suffix keys. Attention over the two key
ranges is computed separately and merged exactly through their log-sum-exp (as flash attention merges key blocks):

- the prefix keys are the clean cache viewed once and broadcast over rows (stride 0): no per-row copy;
- a row that does not cut edges in a layer needs no mask at all: the prefix part is unmasked and the suffix part is
  plain causal (the fast ``is_causal`` kernel);
- a row that cuts edges reads, per chunk of queries that block the same keys, only the runs of keys it may attend
  to ("pieces"), each with its slice of an additive bias built once per distinct blocked pattern (shared by every
  row and layer that cuts it, broadcast over heads): no ``(heads, N, N)`` masks;
- batches of few queries per row (flows into the last token) skip the pieces: one explicit softmax over all rows,
  the shared prefix read by one matmul per kv head;
- the last layer computes each row's last query alone (only it reaches the logits).

On CPU the pieces run torch's flash kernel, which returns the log-sum-exp; elsewhere an explicit (chunked) softmax.
`SuffixPack` serves rows of several suffix starts packed along one sequence. The function is registered with
transformers under `ATTENTION_NAME` only inside `suffix_attention` (and removed again on its exit).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

ATTENTION_NAME = "mapflow_suffix"
# Query rows per chunk of a cut pattern: each chunk reads only the key runs it may attend to (a frame's queries under
# cross_frame read their own frame, not the whole sequence).
QUERY_CHUNK = 128
MIN_QUERY_CHUNK = 16
# Blocked key runs shorter than this are masked inside one piece rather than split into two kernel calls.
KEY_GAP = 64
# Batches whose rows have at most this many (query, key) pairs (flows into the last token, the small organism) run
# one explicit softmax over all rows per layer: a few large operations instead of kernel calls per row group and
# piece. Larger ones skip the keys they may not read, piece by piece.
DENSE_MAX_SCORES = 16384

# Query rows per chunk of the explicit-softmax fallback: bounds its (rows, heads, chunk, keys) score tensor.
MATH_QUERY_CHUNK = 256


def uses_dense(suffix_len: int, seq_len: int) -> bool:
    return suffix_len * seq_len <= DENSE_MAX_SCORES


@dataclass
class Piece:
    """Queries ``q_lo..q_hi`` of the suffix attend keys ``k_lo..k_hi`` of the prefix or of the suffix."""

    q_lo: int
    q_hi: int
    in_prefix: bool
    k_lo: int
    k_hi: int
    bias: torch.Tensor | None = None  # (1, 1, queries, keys) additive 0 / -inf; None: every key allowed
    causal: bool = False  # the clean suffix: square, plain causal (the fast kernel, no bias)
    empty: torch.Tensor | None = None  # (queries,) bool: queries with no allowed key here; None: no such query


def clean_pieces(suffix_len: int, prefix_len: int) -> list[Piece]:
    """An uncut row: the whole prefix, then the suffix causally."""
    pieces = [Piece(0, suffix_len, True, 0, prefix_len)] if prefix_len else []
    return pieces + [Piece(0, suffix_len, False, 0, suffix_len, causal=True)]


def cut_pieces(blocked_rows: torch.Tensor, start: int, dtype, device) -> list[Piece]:
    """A cut pattern, ``blocked_rows`` (S, L) bool = the blocked matrix's rows ``start..``: per query chunk, one piece
    per run of keys that some query of the chunk may read (prefix and suffix separately)."""
    rows = blocked_rows.to(device)
    allowed = torch.ones(rows.shape, dtype=torch.bool, device=device).tril(start) & ~rows
    pieces = []
    for q_lo, q_hi in _query_chunks(rows):
        for offset, stop, in_prefix in ((0, start, True), (start, rows.shape[1], False)):
            block = allowed[q_lo:q_hi, offset:stop]
            for k_lo, k_hi in _runs(block.any(0)):
                sub = block[:, k_lo:k_hi]
                empty = ~sub.any(-1)
                pieces.append(
                    Piece(
                        q_lo,
                        q_hi,
                        in_prefix,
                        k_lo,
                        k_hi,
                        bias=None if bool(sub.all()) else _bias(sub, dtype),
                        empty=empty if bool(empty.any()) else None,
                    )
                )
    return pieces


def _query_chunks(rows: torch.Tensor) -> list[tuple[int, int]]:
    """Runs of consecutive queries that block the same keys (a span of the flow's target, a frame), cut to at most
    `QUERY_CHUNK`; runs shorter than `MIN_QUERY_CHUNK` join the next one."""
    size = rows.shape[0]
    changes = (torch.nonzero((rows[1:] != rows[:-1]).any(-1)).flatten() + 1).tolist()
    bounds = [0]
    for change in changes:
        if change - bounds[-1] >= MIN_QUERY_CHUNK:
            bounds.append(change)
    if size - bounds[-1] < MIN_QUERY_CHUNK and len(bounds) > 1:
        bounds.pop()
    bounds.append(size)
    chunks = []
    for lo, hi in itertools.pairwise(bounds):
        step = -(-(hi - lo) // -(-(hi - lo) // QUERY_CHUNK))  # equal parts of at most QUERY_CHUNK
        chunks += [(a, min(a + step, hi)) for a in range(lo, hi, step)]
    return chunks


def _runs(present: torch.Tensor) -> list[tuple[int, int]]:
    """Half-open runs of True, joined across gaps shorter than `KEY_GAP`."""
    index = torch.nonzero(present).flatten().tolist()
    runs: list[list[int]] = []
    for i in index:
        if runs and i - runs[-1][1] < KEY_GAP:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    return [(lo, hi) for lo, hi in runs]


def _bias(allowed: torch.Tensor, dtype) -> torch.Tensor:
    bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return bias.masked_fill_(~allowed, float("-inf"))[None, None]


@dataclass
class SuffixBatch:
    """What the attention function needs for one batch: the shared prefix and, per layer, which rows cut what."""

    start: int
    prefix_keys: list[torch.Tensor]  # per layer (1, kv_heads, start, head_dim): views of the clean cache
    prefix_values: list[torch.Tensor]
    patterns: list[list[Piece]]  # per distinct blocked pattern
    clean: list[Piece]  # rows that cut nothing in a layer
    # per layer: (row indices or None for all rows, pattern index or None for uncut rows)
    groups: list[list[tuple[torch.Tensor | None, int | None]]]
    # per layer, each active row's index into the biases below (the last index: an uncut row)
    dense_index: list[torch.Tensor] = field(default_factory=list)
    # (patterns + 1, 1, L): the last query's additive bias; the last layer computes only that query (see engine)
    last_bias: torch.Tensor | None = None
    # few queries: (patterns + 1, S, L) additive bias of every query
    dense_bias: torch.Tensor | None = None
    # per layer: (rows, heads) of rows that cut their pattern in some query heads only; their other heads are
    # recomputed uncut (attention heads are independent, so this is exact)
    head_rows: list[list[tuple[torch.Tensor, tuple[int, ...]]]] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        start: int,
        keys,
        values,
        row_patterns: list[torch.Tensor],
        row_layers: list[tuple[int, ...]],
        row_entries: list[int],
        dtype,
        device,
        row_heads: list | None = None,
    ) -> SuffixBatch:
        """``row_patterns``: each row's (L, L) blocked matrix (rows with equal matrices share their pieces);
        ``row_layers``: the layers it cuts; ``row_entries``: ascending, the layer where it joins the batch (a layer
        computes the rows that joined at or before it, in row order); ``row_heads``: per row the query heads it cuts
        in (None: all)."""
        unique: list[torch.Tensor] = []
        pattern_of_row = []
        for blocked in row_patterns:
            suffix_rows = blocked[start:]
            found = next((j for j, u in enumerate(unique) if u is suffix_rows or torch.equal(u, suffix_rows)), None)
            if found is None:
                unique.append(suffix_rows)
                found = len(unique) - 1
            pattern_of_row.append(found)
        suffix_len = row_patterns[0].shape[0] - start
        causal = torch.ones(suffix_len, row_patterns[0].shape[1], dtype=torch.bool, device=device).tril(start)
        allowed = torch.stack([causal & ~u.to(device) for u in unique] + [causal])  # the last one: uncut rows
        # each active row's entry in `allowed`, per layer
        dense_index = [
            torch.tensor(
                [
                    pattern_of_row[r] if layer in row_layers[r] else len(unique)
                    for r in range(sum(entry <= layer for entry in row_entries))
                ],
                device=device,
            )
            for layer in range(len(keys))
        ]
        batch = cls(
            start,
            [k[:, :, :start] for k in keys],
            [v[:, :, :start] for v in values],
            [],
            [],
            [],
            dense_index=dense_index,
            last_bias=_bias(allowed[:, -1:], dtype)[0, 0],
        )
        if row_heads is not None and any(h is not None for h in row_heads):
            for layer in range(len(keys)):
                by_heads: dict[tuple[int, ...], list[int]] = {}
                for r in range(len(dense_index[layer])):
                    if row_heads[r] is not None and layer in row_layers[r]:
                        by_heads.setdefault(tuple(row_heads[r]), []).append(r)
                batch.head_rows.append(
                    [(torch.tensor(members, device=device), heads) for heads, members in by_heads.items()]
                )
        if uses_dense(suffix_len, row_patterns[0].shape[1]):
            batch.dense_bias = _bias(allowed, dtype)[0, 0]
            return batch
        batch.patterns = [cut_pieces(u, start, dtype, device) for u in unique]
        batch.clean = clean_pieces(suffix_len, start)
        for layer in range(len(keys)):
            rows = len(dense_index[layer])
            by_key: dict[int | None, list[int]] = {}
            for r in range(rows):
                by_key.setdefault(pattern_of_row[r] if layer in row_layers[r] else None, []).append(r)
            batch.groups.append(
                [
                    (None if len(members) == rows else torch.tensor(members, device=device), key)
                    for key, members in by_key.items()
                ]
            )
        return batch


def _attend_part(q, k, v, bias, causal: bool, scale: float):
    """(output, log-sum-exp over keys) of one key range; a query with no allowed key gives output 0."""
    if bias is not None:
        bias = bias.to(q.device)  # a no-op unless a device_map puts this layer on another device
    if q.device.type == "cpu":
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, causal, attn_mask=bias, scale=scale
        )
    return _attend_part_math(q, k, v, bias, causal, scale)


def _attend_part_math(q, k, v, bias, causal: bool, scale: float):
    """The same as the CPU flash kernel, by an explicit softmax over query chunks (any device)."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    outs, lses = [], []
    for lo in range(0, q.shape[2], MATH_QUERY_CHUNK):
        hi = min(lo + MATH_QUERY_CHUNK, q.shape[2])
        scores = (q[:, :, lo:hi].float() @ k.float().transpose(-1, -2)) * scale
        if bias is not None:
            scores = scores + bias[..., lo:hi, :].float()
        if causal:  # square: query lo+i sees keys 0..lo+i
            scores = scores.masked_fill(
                torch.ones(hi - lo, k.shape[2], dtype=torch.bool, device=q.device).triu(lo + 1), float("-inf")
            )
        lse = scores.logsumexp(-1)
        probs = torch.exp(scores - lse.masked_fill(lse == float("-inf"), 0)[..., None])
        outs.append((probs @ v.float()).to(q.dtype))
        lses.append(lse)
    return torch.cat(outs, 2), torch.cat(lses, 2)


def _attend(q, k, v, prefix_k, prefix_v, pieces: list[Piece], scale: float) -> torch.Tensor:
    """Attention of the suffix queries over their pieces, merged through each piece's log-sum-exp."""
    rows = q.shape[0]
    if len(pieces) == 1 and pieces[0].q_lo == 0 and pieces[0].q_hi == q.shape[2]:
        piece = pieces[0]  # e.g. a batch with no prefix
        keys, values = (prefix_k, prefix_v) if piece.in_prefix else (k, v)
        return _attend_part(
            q,
            keys[:, :, piece.k_lo : piece.k_hi].expand(rows, -1, -1, -1),
            values[:, :, piece.k_lo : piece.k_hi].expand(rows, -1, -1, -1),
            piece.bias,
            piece.causal,
            scale,
        )[0]
    out = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    lse = torch.full(q.shape[:3], float("-inf"), device=q.device)
    for piece in pieces:
        keys, values = (prefix_k, prefix_v) if piece.in_prefix else (k, v)
        p_out, p_lse = _attend_part(
            q[:, :, piece.q_lo : piece.q_hi],
            keys[:, :, piece.k_lo : piece.k_hi].expand(rows, -1, -1, -1),
            values[:, :, piece.k_lo : piece.k_hi].expand(rows, -1, -1, -1),
            piece.bias,
            piece.causal,
            scale,
        )
        if piece.empty is not None:  # the flash kernel reports log-sum-exp 0 for a query with no allowed key
            p_lse = p_lse.masked_fill(piece.empty, float("-inf"))
        acc_out, acc_lse = out[:, :, piece.q_lo : piece.q_hi], lse[:, :, piece.q_lo : piece.q_hi]
        # exact merge of two normalised softmax blocks; a query empty in both stays (0, -inf)
        top = torch.maximum(acc_lse, p_lse).clamp_min(torch.finfo(torch.float32).min)
        w_acc, w_new = torch.exp(acc_lse - top), torch.exp(p_lse - top)
        total = w_acc + w_new
        acc_out.mul_((w_acc / total.clamp_min(1e-30))[..., None]).add_(
            p_out.float() * (w_new / total.clamp_min(1e-30))[..., None]
        )
        acc_lse.copy_(top + torch.log(total))
    return out.to(q.dtype)


def _attend_dense(q, k, v, prefix_k, prefix_v, bias, scale: float) -> torch.Tensor:
    """All rows at once by an explicit softmax; ``bias`` (rows, S, L). The shared prefix keys are read through one
    matmul per kv head with every row's queries stacked (no per-row copy of the prefix)."""
    rows, heads, size, dim = q.shape
    kv_heads, prefix = k.shape[1], prefix_k.shape[2]
    bias = bias.to(q.device)
    grouped = q.float().reshape(rows, kv_heads, heads // kv_heads * size, dim)  # heads sharing a kv head
    stacked = grouped.transpose(0, 1).reshape(kv_heads, -1, dim)
    prefix_scores = (stacked @ prefix_k[0].float().transpose(-1, -2)).view(kv_heads, rows, -1, prefix)
    scores = torch.cat([prefix_scores.transpose(0, 1), grouped @ k.float().transpose(-1, -2)], -1) * scale
    scores = scores.view(rows, kv_heads, heads // kv_heads, size, -1) + bias[:, None, None]
    probs = scores.softmax(-1).view(rows, kv_heads, -1, scores.shape[-1])
    prefix_probs = probs[..., :prefix].transpose(0, 1).reshape(kv_heads, -1, prefix)
    out = (prefix_probs @ prefix_v[0].float()).view(kv_heads, rows, -1, dim).transpose(0, 1)
    out = out + probs[..., prefix:] @ v.float()
    return out.reshape(rows, heads, size, dim).to(q.dtype)


def attend_batch(batch: SuffixBatch, layer: int, query, key, value, scale: float, last_only: bool) -> torch.Tensor:
    """(rows, heads, S, d) attention output of a rectangular batch; with ``last_only`` (rows, heads, 1, d) for the
    last query alone. Rows that cut some heads only get the uncut attention in their other heads."""
    out = _attend_rows(batch, layer, query, key, value, scale, last_only)
    for rows, heads in batch.head_rows[layer] if batch.head_rows else ():
        uncut = torch.ones(query.shape[1], dtype=torch.bool, device=query.device)
        uncut[list(heads)] = False
        clean = _attend_uncut(batch, layer, query[rows], key[rows], value[rows], scale, last_only)
        part = out[rows]
        part[:, uncut] = clean[:, uncut]
        out[rows] = part
    return out


def _attend_uncut(batch: SuffixBatch, layer: int, query, key, value, scale: float, last_only: bool):
    """Attention of rows that cut nothing in this layer (the last bias / pattern entry is the uncut one)."""
    prefix_k, prefix_v = batch.prefix_keys[layer], batch.prefix_values[layer]
    uncut = torch.full((query.shape[0],), batch.last_bias.shape[0] - 1, device=query.device)
    if last_only:
        return _attend_dense(query[:, :, -1:], key, value, prefix_k, prefix_v, batch.last_bias[uncut], scale)
    if batch.dense_bias is not None:
        return _attend_dense(query, key, value, prefix_k, prefix_v, batch.dense_bias[uncut], scale)
    return _attend(query, key, value, prefix_k, prefix_v, batch.clean, scale)


def _attend_rows(batch: SuffixBatch, layer: int, query, key, value, scale: float, last_only: bool) -> torch.Tensor:
    prefix_k, prefix_v = batch.prefix_keys[layer], batch.prefix_values[layer]
    if last_only:
        return _attend_dense(
            query[:, :, -1:], key, value, prefix_k, prefix_v, batch.last_bias[batch.dense_index[layer]], scale
        )
    if batch.dense_bias is not None:
        return _attend_dense(query, key, value, prefix_k, prefix_v, batch.dense_bias[batch.dense_index[layer]], scale)
    groups = batch.groups[layer]
    if len(groups) == 1 and groups[0][0] is None:
        pattern = groups[0][1]
        return _attend(
            query, key, value, prefix_k, prefix_v, batch.clean if pattern is None else batch.patterns[pattern], scale
        )
    out = torch.empty_like(query)
    for rows, pattern in groups:
        out[rows] = _attend(
            query[rows],
            key[rows],
            value[rows],
            prefix_k,
            prefix_v,
            batch.clean if pattern is None else batch.patterns[pattern],
            scale,
        )
    return out


@dataclass
class SuffixPack:
    """Rows of several suffix starts packed along the sequence of one batch row: row r's positions ``start_r..L-1``
    follow each other, rows in the order they join (so a layer's active tokens are a prefix of the packed sequence).
    The linear layers see no padding; attention gathers each start's rows into a rectangular `SuffixBatch`."""

    batches: list[SuffixBatch]  # one per suffix start
    # per layer, per start: packed positions of its active rows' tokens, row-major (None: none active yet)
    token_index: list[list[torch.Tensor | None]]
    suffix_lens: list[int]

    def attend(self, layer: int, query, key, value, scale: float, last_only: bool) -> torch.Tensor:
        """``query`` (1, heads, T, d) -> (1, T, heads, d); with ``last_only`` only each row's last token is filled."""
        heads, tokens, dim = query.shape[1:]
        out = query.new_zeros(1, tokens, heads, dim)
        for batch, index, size in zip(self.batches, self.token_index[layer], self.suffix_lens):
            if index is None:
                continue
            index = index.to(query.device)
            rows = index.numel() // size
            q, k, v = (x[0][:, index].view(x.shape[1], rows, size, dim).transpose(0, 1) for x in (query, key, value))
            result = attend_batch(batch, layer, q, k, v, scale, last_only)
            if last_only:
                out[0, index.view(rows, size)[:, -1]] = result[:, :, 0]
            else:
                out[0, index] = result.transpose(1, 2).reshape(rows * size, heads, dim)
        return out


def suffix_attention_forward(
    module,
    query,
    key,
    value,
    attention_mask,
    *,
    scaling=None,
    dropout=0.0,
    suffix_batch: SuffixBatch | None = None,
    suffix_pack: SuffixPack | None = None,
    **kwargs,
):
    """transformers attention-function signature; ``query`` (rows, heads, S, d), ``key``/``value`` the suffix's own
    (rows, kv_heads, S, d) (one packed row under ``suffix_pack``). Returns (rows, S, heads, d) and no weights. The
    last layer computes the last query alone (only it reaches the logits; the engine trims that layer's MLP too)."""
    layer = module.layer_idx
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    if suffix_pack is not None:
        last_only = layer == len(suffix_pack.batches[0].prefix_keys) - 1
        return suffix_pack.attend(layer, query, key, value, scale, last_only), None
    if suffix_batch is None:
        raise RuntimeError(
            f"attention '{ATTENTION_NAME}' needs a suffix_batch or suffix_pack (see mapflow.knockout.engine)"
        )
    last_only = layer == len(suffix_batch.prefix_keys) - 1
    out = attend_batch(suffix_batch, layer, query, key, value, scale, last_only)
    return out.expand(-1, -1, query.shape[2], -1).transpose(1, 2).contiguous(), None


def _no_mask(*args, **kwargs):
    return None  # the attention function builds what it needs from the SuffixBatch


def _registries():
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    return (
        (AttentionInterface._global_mapping, suffix_attention_forward),
        (type(ALL_MASK_ATTENTION_FUNCTIONS)._global_mapping, _no_mask),
    )


def register() -> None:
    for mapping, function in _registries():
        mapping[ATTENTION_NAME] = function


class suffix_attention:  # noqa: N801 (used like a function: ``with suffix_attention(config):``)
    """Within the block the language model's layers call `suffix_attention_forward` (the config is shared by them).

    Nothing outlives the block: the attention and mask functions are registered on entry and removed on exit (unless
    an enclosing block registered them), and the config's implementation is restored, so a model shared with other
    users (an NDIF server's) is the unmodified model before and after. A class, not a ``@contextmanager``: it ships
    to a server by source inside a sample request, where a decorator would be lost.
    """

    def __init__(self, text_config):
        self.text_config = text_config

    def __enter__(self):
        self.added = [mapping for mapping, _ in _registries() if ATTENTION_NAME not in mapping]
        register()
        self.previous = self.text_config._attn_implementation
        self.text_config._attn_implementation = ATTENTION_NAME
        return self

    def __exit__(self, *exc):
        self.text_config._attn_implementation = self.previous
        for mapping in self.added:
            mapping.pop(ATTENTION_NAME, None)
        return False
