"""The planted route of ``organism-pathway``: per-layer training masks and grounded video-token targets.

Route (0-based, half-open layer ranges; the paper's staging in an 8-layer model):

* cross-frame attention among video tokens is open only in ``cross_frame`` layers;
* the question block reads the video only in ``video->question`` layers;
* the last position reads the question block only in ``question->last`` layers;
* the last position never reads the video (``video->last`` is ``[]``: closed everywhere).

So that this is the *only* route from the video to the answer, the prompt's other text after the video (the bridge
``\\n`` and the answer prompt ``\\nASSISTANT: Best option:``) may read neither the video nor the question block in any
layer: otherwise it could relay either to the last position outside the planted ranges.

Grounding: the LM head read of a video token's hidden state (final norm, then LM head: the logit lens) is trained
towards the words of what its cell shows: colour and shape (or the scene) after the early layers, and what changed
since the previous seen frame (appears, grows, left, ...) after the planted cross-frame layers, when only
cross-frame attention can have brought the previous frame in.
"""

from __future__ import annotations

import numpy as np
import torch

from .temporal_tasks import BACKGROUND, COLORS, SCENE_NAMES, scene_image

PLANTED_ROUTES: dict[str, list[list[int]]] = {
    "cross_frame": [[0, 3]],
    "video->question": [[3, 5]],
    "question->last": [[5, 8]],
    "video->last": [],
}

# token roles in a training prompt
PRE, VIDEO, QUESTION, OTHER, LAST, PAD = range(6)
QUESTION_SEGMENTS = ("question_prefix", "question_text", "options_header")

SHAPE_WORDS = ("square", "circle")
SPATIAL_WORDS = (*COLORS, *SHAPE_WORDS, *SCENE_NAMES)
TEMPORAL_WORDS = ("appears", "disappears", "grows", "shrinks", "left", "right", "moving", "change")
MIN_PIXELS = 3  # an object needs this many pixels in a cell to name it
SQUARE_FILL = 0.93  # share of its bounding box a square fills (a rasterized circle fills at most ~0.8)
GROWTH = 1.2  # area ratio between two seen frames that counts as growing (1 / GROWTH: shrinking)
SHIFT = 0.75  # centroid shift in pixels between two seen frames that counts as moving


def layers_of(ranges: list[list[int]]) -> set[int]:
    return {layer for a, b in ranges for layer in range(a, b)}


def token_roles(segment_names: dict[str, list[int]], seq_len: int, length: int) -> np.ndarray:
    """Role of every position of one padded prompt (``length`` real tokens, right-padded to ``seq_len``)."""
    roles = np.full(seq_len, PAD, dtype=np.int64)
    roles[:length] = PRE
    video = segment_names["video"]
    after_video = np.arange(seq_len) > max(video)
    roles[:length][after_video[:length]] = OTHER
    for name, positions in segment_names.items():
        if name in QUESTION_SEGMENTS or name.startswith("option_"):
            roles[positions] = QUESTION
    roles[video] = VIDEO
    roles[length - 1] = LAST
    return roles


def planted_masks(
    roles: torch.Tensor,
    frame: torch.Tensor,
    num_layers: int,
    routes: dict[str, list[list[int]]] = PLANTED_ROUTES,
    open_rows: torch.Tensor | None = None,
    open_cells: torch.Tensor | None = None,
    question_reads_last_frame: bool = False,
) -> list[torch.Tensor]:
    """One boolean (B, 1, L, L) allowed-edge mask per decoder layer: causal, no padded keys, and the planted route.

    ``roles`` (B, L) as `token_roles`; ``frame`` (B, L) the frame index of video positions, -1 elsewhere. Rows flagged
    in ``open_rows`` keep every causal edge (the analysis' clean state), so unblocking is no perturbation.
    ``open_cells`` (B, len(routes) + 1, num_layers) bool opens single blocked cells instead: (route, layer) in the
    routes' order, the last index the relay edges of the other text; so a row can sit between planted and clean, as a
    knockout outside the planted layers puts it. ``question_reads_last_frame``: the planted video -> question edges
    come only from the last frame's tokens, so the earlier frames reach the question only through cross-frame
    attention."""
    b, n = roles.shape
    causal = torch.ones(n, n, dtype=torch.bool).tril()[None] & (roles != PAD)[:, None, :]
    query, key = roles[:, :, None], roles[:, None, :]
    earlier_frame = (frame[:, :, None] > frame[:, None, :]) & (frame[:, None, :] >= 0)
    edges = {
        "cross_frame": earlier_frame,
        "video->question": (key == VIDEO) & (query == QUESTION),
        "question->last": (key == QUESTION) & (query == LAST),
        "video->last": (key == VIDEO) & (query == LAST),
    }
    # no relay: the text after the video that is neither question nor last reads neither in any layer
    relay = ((key == VIDEO) | (key == QUESTION)) & (query == OTHER)
    # earlier frames -> question: closed in every layer of a planted row (not a route of its own: its cells are
    # video->question's, so opening that cell opens these edges too)
    earlier_to_question = (
        edges["video->question"] & (frame[:, None, :] < frame.amax(1)[:, None, None])
        if question_reads_last_frame
        else torch.zeros_like(relay)
    )
    cells = torch.zeros(b, len(routes) + 1, num_layers, dtype=torch.bool) if open_cells is None else open_cells
    if open_rows is not None:
        cells = cells | open_rows[:, None, None]
    masks = []
    for layer in range(num_layers):
        blocked = relay & ~cells[:, -1, layer, None, None]
        for index, (route, ranges) in enumerate(routes.items()):
            shut = (
                edges[route]
                if layer not in layers_of(ranges)
                else (earlier_to_question if route == "video->question" else None)
            )
            if shut is not None:
                blocked |= shut & ~cells[:, index, layer, None, None]
        masks.append((causal & ~blocked)[:, None])
    return masks


def random_open_cells(
    rows: int,
    num_layers: int,
    share: float,
    rng: np.random.Generator,
    routes: dict[str, list[list[int]]] = PLANTED_ROUTES,
) -> torch.Tensor:
    """Seeded (rows, len(routes) + 1, num_layers) cells for `planted_masks`: each open with probability ``share``
    (1.0: every edge open, the clean state)."""
    return torch.from_numpy(rng.random((rows, len(routes) + 1, num_layers)) < share)


# ---------------------------------------------------------------------------------------------------------------
# Grounding targets


def _colour_masks(frames: np.ndarray) -> dict[str, np.ndarray]:
    """colour -> (T, H, W) bool: pixels painted exactly in that object colour."""
    return {name: (frames == np.asarray(rgb, dtype=np.uint8)).all(-1) for name, rgb in COLORS.items()}


def _shape(mask: np.ndarray) -> str:
    ys, xs = np.nonzero(mask)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    return "square" if ys.size / box >= SQUARE_FILL else "circle"


def _scene(cell: np.ndarray, rows: slice, cols: slice) -> str | None:
    if (cell == np.asarray(BACKGROUND, dtype=np.uint8)).all(-1).mean() > 0.5:
        return None  # plain background: no scene (the common case, checked first for speed)
    for name in SCENE_NAMES:
        if (cell == scene_image(name)[rows, cols]).all(-1).mean() > 0.5:
            return name
    return None


def grounding_words(frames: np.ndarray, grid: int = 2) -> tuple[list[tuple[str, ...]], list[str | None]]:
    """For seen frames (T, H, W, 3) uint8: per video token (frame-major, then row-major cells) the spatial words of
    its cell (colour and shape of the object covering most of it, or the scene; empty for plain background) and the
    temporal word (what that object or scene did since the previous seen frame; None for frame 0 or no change)."""
    steps, height, width = frames.shape[:3]
    ch, cw = height // grid, width // grid
    masks = _colour_masks(frames)
    counts = {c: m.sum((1, 2)) for c, m in masks.items()}
    spatial: list[tuple[str, ...]] = []
    temporal: list[str | None] = []
    for t in range(steps):
        for r in range(grid):
            for c in range(grid):
                rows, cols = slice(r * ch, (r + 1) * ch), slice(c * cw, (c + 1) * cw)
                here = {name: int(m[t, rows, cols].sum()) for name, m in masks.items()}
                before = {name: int(m[t - 1, rows, cols].sum()) for name, m in masks.items()} if t else {}
                colour = max(here, key=here.get)
                scene = _scene(frames[t, rows, cols], rows, cols)
                if here[colour] >= MIN_PIXELS:
                    spatial.append((colour, _shape(masks[colour][t])))
                elif scene is not None:
                    spatial.append((scene,))
                else:
                    spatial.append(())
                word = None
                if t:
                    if here[colour] < MIN_PIXELS and before and max(before.values()) >= MIN_PIXELS:
                        colour = max(before, key=before.get)  # the object left this cell
                    word = (
                        _change(masks[colour], counts[colour], t)
                        if max(here[colour], before.get(colour, 0)) >= MIN_PIXELS
                        else None
                    )
                    if word is None and scene is not None:
                        previous = _scene(frames[t - 1, rows, cols], rows, cols)
                        word = "change" if previous not in (None, scene) else None
                temporal.append(word)
    return spatial, temporal


def _change(mask: np.ndarray, count: np.ndarray, t: int) -> str | None:
    now, prev = int(count[t]), int(count[t - 1])
    if prev == 0 and now > 0:
        return "appears"
    if prev > 0 and now == 0:
        return "disappears"
    if now == 0:
        return None
    if now >= GROWTH * prev:
        return "grows"
    if now * GROWTH <= prev:
        return "shrinks"
    ys0, xs0 = np.nonzero(mask[t - 1])
    ys1, xs1 = np.nonzero(mask[t])
    dx, dy = xs1.mean() - xs0.mean(), ys1.mean() - ys0.mean()
    if abs(dx) >= SHIFT:
        return "right" if dx > 0 else "left"
    if abs(dy) >= SHIFT:
        return "moving"
    return None


def word_ids(tokenizer, words) -> dict[str, int]:
    """word -> the single token id of `` word`` (as it follows a space in the prompts); an error if it splits."""
    ids = {}
    for word in words:
        pieces = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            raise ValueError(f"grounding word '{word}' is not one token in this tokenizer: {pieces}")
        ids[word] = pieces[0]
    return ids


def grounding_targets(
    frames: np.ndarray, ids: dict[str, int], vocab: int, grid: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft spatial targets (n_video, vocab) (rows of zeros: no target) and temporal ids (n_video,) (-100: none)."""
    spatial, temporal = grounding_words(frames, grid)
    soft = torch.zeros(len(spatial), vocab)
    for i, words in enumerate(spatial):
        for word in words:
            soft[i, ids[word]] = 1.0 / len(words)
    hard = torch.tensor([ids[w] if w is not None else -100 for w in temporal])
    return soft, hard
