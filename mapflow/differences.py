"""Where the paper, the authors' released code and mapflow's default differ, and the setting that gives the other
behaviour: the one list the documentation's table (docs/paper/differences.md) is rendered from (`render_markdown`),
whose defaults the run options read (`default`), and which `tests/test_differences.py` holds to the code (every named
option, flag and keyword exists, and every default is the one the code uses).

Pure data: this module imports nothing from mapflow, so every layer may read it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    """How the other behaviour is asked for, in a form a test can check against the code.

    ``kind``: ``option`` (``--option key=value`` of the named ``studies``), ``flag`` (a ``mapflow run`` flag; ``key``
    is its dest) or ``keyword`` (``key`` is a keyword argument of the function ``target``, a dotted path).
    ``default`` is mapflow's default value of it (what the code reads when the setting is not given).
    """

    kind: str
    key: str
    default: object
    other: str  # the value (or usage) that gives the other behaviour, as a user writes it
    studies: tuple[str, ...] = ()
    target: str = ""

    def usage(self) -> str:
        if self.kind == "option":
            return f"`--option {self.key}={self.other}`"
        if self.kind == "flag":
            return f"`{self.other}`"
        return f"`{self.target.rsplit('.', 1)[-1]}(..., {self.key}={self.other})`"


@dataclass(frozen=True)
class Difference:
    topic: str
    paper: str
    released_code: str
    mapflow: str  # mapflow's default behaviour
    setting: Setting | None = None  # None: no setting (say why in ``mapflow``)
    note: str = ""  # where it matters or how it was verified


DIFFERENCES: tuple[Difference, ...] = (
    Difference(
        "Correctness of the clean answer (every study's `correct`, the `--samples` filter)",
        '"answered correctly" (no rule given)',
        "`decode([pred]).lower() == letter.lower()`",
        "the released rule: the decoded text, ignoring case (`▁A`, `A`, `a` all count), applied where the logits are "
        "(the rule travels to a server as token ids); stores keep `correct_text`, `correct_token` and count their "
        "disagreements",
        Setting("option", "correct_by", "text", "token", studies=("*",)),
    ),
    Difference(
        "Accuracy after a knockout (`correct_knockout`, `correct_after`: Table 2, Table 3, Fig. V)",
        "not stated",
        "decoded piece equals the letter, case-sensitive",
        "the run's correctness rule (`correct_by`) applied to the knocked-out prediction",
        Setting("option", "correct_by", "text", "token", studies=("*",)),
    ),
    Difference(
        "Ground-truth token",
        "the answer letter",
        "the bare letter looked up in the vocabulary",
        "the letter's token as it follows the prompt (`A` after `(`; `▁A` after a space on SentencePiece)",
        Setting("flag", "gt_token", "continuation", "--gt-token vocab"),
    ),
    Difference(
        "Non-option question span",
        "includes `Question:` (the paper's example)",
        "leaves `Question:` out",
        "includes `Question:`",
        Setting("flag", "non_option_without_prefix", False, "--non-option-without-prefix"),
    ),
    Difference(
        "Precision",
        "bfloat16",
        "bfloat16 (GPU)",
        "`--dtype auto`: bfloat16 on a GPU, float32 on a CPU (bfloat16 CPU kernels are slow; the embedded organisms "
        "were trained in float32; their accuracy moves 2.4 points in bfloat16)",
        Setting("flag", "dtype", "auto", "--dtype bfloat16"),
    ),
    Difference(
        "Layer readouts (answer probability, Fig. 8)",
        "each layer's output through the final norm and the LM head",
        "raw residual through the LM head (norm only on the last layer)",
        "the paper's: final norm then LM head, so the last layer equals the model's logits",
        Setting("option", "lens", "paper", "released_code", studies=("answer_probability", "logit_lens")),
    ),
    Difference(
        "Logit lens (Fig. 4, Fig. T)",
        "each layer's output through the final norm and the LM head",
        "the residual *entering* each layer projected with the input-embedding matrix",
        "the paper's",
        Setting("option", "lens", "paper", "released_code", studies=("answer_probability", "logit_lens")),
    ),
    Difference(
        "Keyword lists (Fig. 4)",
        "Table D",
        "Table D plus bottle, dish, do",
        "Table D (`data/keywords/paper`)",
        Setting("option", "keywords", "paper", "released_code", studies=("logit_lens",)),
    ),
    Difference(
        "Keyword hits",
        "not stated",
        "the raw decoded top-1 piece equals the keyword",
        "the decoded piece, lower-cased and stripped of spaces, equals the keyword's first sub-token decoded the same "
        "way (a SentencePiece `▁walk` counts)",
    ),
    Difference(
        "Keyword-frequency bins (Fig. 4)",
        "5-layer bins",
        "5-layer bins overlapping by one layer",
        "disjoint 5-layer bins",
        Setting("keyword", "bins", "paper", '"released_code"', target="mapflow.viz.tables.keyword_frequency"),
    ),
    Difference(
        "Keyword threshold (Fig. 4)",
        "none stated",
        "keywords under 100 hits dropped",
        "the released threshold, 100",
        Setting("keyword", "min_hits", 100, "0", target="mapflow.viz.tables.keyword_frequency"),
    ),
    Difference(
        "Attention-map labels (Fig. 5)",
        "question words",
        "labels off by the `Question:` prefix",
        "indexed by absolute position (the released labels' offset is a bug, not offered)",
    ),
    Difference(
        "Effective-pathway masks (Table 3)",
        "only the identified routes open",
        "the `USER:` bridge and post-prompt tokens stay unrestricted (indirect video → bridge → last routes open)",
        "both are measured in every run: `effective` (the released masks) and `effective_strict` (those routes closed "
        "too)",
    ),
    Difference(
        "Random-blocking control (Table 3)",
        "the same number of blocked edges, at random",
        "`int(0.58 × N(N+1)/2)` pairs per layer, unseeded",
        "the effective condition's blocked-edge count per layer, drawn uniformly among pairs at or after the first "
        "video token, seeded by `--seed` and the sample id",
        Setting("option", "random_block_ratio", None, "0.58", studies=("effective_pathway",)),
    ),
    Difference(
        "Effective-pathway layer ranges (Table 3 / Table E)",
        "Table E(a) per model: 7B, 13B, Mini-InternVL-4B, VideoLLaMA3",
        "hard-coded per model (the same numbers)",
        "the loaded model's Table E preset, matched by (family, decoder layers, hidden size); a model the table does "
        "not list is refused with the two ways out (`ranges=`, `from=`); never scaled to another depth",
        Setting("option", "preset", None, "NAME", studies=("effective_pathway",)),
    ),
    Difference(
        "Table E's layer rule (`--option from=STORES`)",
        "5-layer intervals whose mean change is below −5 %, from Action Antonym's exact knockouts",
        "(ranges hard-coded per model)",
        "from Action Antonym when the stores hold it, else all tasks pooled; screen stores refused",
        Setting("option", "task", None, "all", studies=("effective_pathway",)),
    ),
    Difference(
        "VideoLLaMA3's video range in the effective pathway",
        "the video tokens",
        "`vision_range`: the whole block, `Time t s:` labels and commas included",
        "the feature tokens (`video`)",
        Setting("option", "video_span", None, "video_block", studies=("effective_pathway",)),
    ),
    Difference(
        "Table 2's accuracy drop",
        '"among samples originally answered correctly"',
        "not computed (no script)",
        "both: the drop in points and the share of originally correct samples turned wrong",
    ),
    Difference(
        "Table 2's example answers",
        "open-ended responses",
        "generated under the knockout (prompt not fixed by the release)",
        "generated from `llava_open_ended` on the same sample and frames; the answering prompt is stored",
        Setting("option", "generate_template", "llava_open_ended", "run", studies=("cross_frame_halves",)),
    ),
    Difference(
        "Failure cases (Figs. AJ–AL)",
        "flows into the predicted false option",
        "the plotting code expects them, the analysis never computes them",
        "implemented: `video->predicted_option`, `non_option_question->predicted_option` (NaN where the prediction "
        "is no false letter)",
    ),
    Difference(
        "Generation under a knockout (Table 2's answers)",
        "not stated",
        "generated tokens inherit the last prompt row's cuts over the prompt keys",
        "as released",
        Setting(
            "keyword", "generated_rows", "inherit_last", '"free"', target="mapflow.readouts.generation.greedy_generate"
        ),
    ),
    Difference(
        "Verb tagger (C.2)",
        "spaCy `en_core_web_lg`",
        "spaCy `en_core_web_lg`",
        "spaCy when installed, else the word list `data/keywords/verbs.txt` (said once)",
        Setting("option", "verbs", "auto", "spacy", studies=("verb_anchors",)),
    ),
    Difference(
        "Verb-anchor reference response (C.2)",
        "not stated",
        "256 generated tokens",
        "as released",
        Setting("option", "max_new_tokens", "256", "N", studies=("verb_anchors",)),
    ),
    Difference(
        "Verb-anchor figure (Fig. S)",
        "all samples",
        "per flow, only samples whose mean change is ≤ 0",
        "all measured samples",
        Setting("keyword", "negative_only", False, "True", target="mapflow.viz.figures.verb_anchor_figure"),
    ),
    Difference(
        "Answer-probability candidates (Fig. 8)",
        "the option letters",
        "per letter, whichever of the tokenizer's and the bare vocabulary's ids is closer to the prediction's id",
        "each letter's token as it follows the answer prompt (the two coincide when the prediction is a letter in the "
        "prompt's own spelling)",
    ),
    Difference(
        "Fig. T overlay",
        "spatial and temporal words",
        "spatial words drawn in both panels",
        "temporal hits from the temporal list",
    ),
    Difference(
        "Per-layer accuracy (Fig. V)",
        "accuracy after blocking",
        "knocks out only originally correct samples and divides those still right by all samples",
        "knocks out every sample (a wrong sample turned right counts); the two differ by those samples",
        Setting("flag", "samples", None, "--samples correct"),
    ),
    Difference(
        "VideoLLaMA3's video range",
        "the video tokens",
        "the whole block: `Time t s:` labels and commas included",
        "`video` is the feature tokens; `cross_frame` cuts whole runs (labels included) as released",
        Setting("flag", "flows", None, "--flows video_block->question"),
    ),
    Difference(
        "VideoLLaMA3 frame size",
        "at most 144 tokens per frame (8 × 12 × 12)",
        "`simple_batched_resize`: sides to multiples of 28, down only above 144 tokens, up only below 16",
        "the released rule (a 320×240 frame keeps 99 tokens, not the converted checkpoint's upscaled 140)",
    ),
    Difference(
        "VideoLLaMA3 chat template",
        "not stated",
        "`DEFAULT_CHAT_TEMPLATE` of the released processor",
        "renders the same prompt, text and token ids (tested)",
    ),
    Difference(
        "Qwen2.5-VL / Qwen3-VL frame timing (beyond the paper's models)",
        "—",
        "qwen-vl-utils: `fps = nframes / total_frames · video_fps`",
        "the sampled frames' real times (mean group spacing; equal to the helper's for evenly tiled frames); 2 fps "
        "without times. The processor's own default would be 24 fps",
    ),
    Difference(
        "Frame-pair knockout on VideoLLaMA3 (beyond the paper)",
        "—",
        "—",
        "cuts whole frame runs (separator, `Time t s:` label, tokens), as its `cross_frame`",
        Setting("option", "unit", "run", "tokens", studies=("frame_pairs",)),
    ),
    Difference(
        "Head-level knockout (beyond the paper)",
        "—",
        "—",
        "one head of one layer per cell (window 1): head indices are not aligned across layers",
        Setting("option", "window", "1", "K", studies=("head_sweep",)),
    ),
    Difference(
        "VideoLLaMA3 timestamps",
        "not stated",
        "the clip's times spaced evenly over its duration (`linspace`)",
        "frame index / decoded fps (under one frame interval apart)",
    ),
    Difference(
        "VideoLLaMA3 answer probability with `lens=released_code`",
        "—",
        "its own script applies the final norm to every layer",
        "`released_code` is the LLaVA script's convention for every family; the default (`paper`) is the VideoLLaMA3 "
        "script's behaviour",
    ),
)


def default(key: str):
    """mapflow's default for a setting named in the list (what the code reads when the user gives none)."""
    values = {d.setting.default for d in DIFFERENCES if d.setting is not None and d.setting.key == key}
    if len(values) != 1:
        raise KeyError(f"no single default for {key!r} in mapflow.differences ({values or 'not listed'})")
    return values.pop()


def render_markdown() -> str:
    """The table of docs/paper/differences.md (between its ``differences`` markers)."""
    rows = ["| topic | paper | released code | mapflow default | other behaviour |", "|---|---|---|---|---|"]
    for d in DIFFERENCES:
        other = d.setting.usage() if d.setting is not None else "—"
        cells = [d.topic, d.paper, d.released_code, d.mapflow, other]
        rows.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
