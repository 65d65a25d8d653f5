"""Every family on a "real inputs" checkpoint (`mapflow.testing.real_inputs`): the published tokenizer, special-token ids,
processor settings and chat template at reduced depth/width, random weights.

On each: `mapflow check` passes; the layout's spans (video, each frame, question, options, post prompt, answer prompt,
last) equal positions computed here independently, from the tokenizer's own offsets on the prompt text rendered here
and the processor's video ids; the answer token under ``continuation`` and ``vocab`` is the published model's id;
``cross_frame`` through the fast engine is as close to float64 as the naive recompute is. Needs the real tokenizers
(npm): skipped with the reason when they cannot be fetched, failed under CI.
"""

import math

import numpy as np
import pytest
import torch
from conftest import study_context
from tolerances import assert_float32_exact

from mapflow.data.sample import Sample
from mapflow.inputs.prompts import LLAVA_MCQA, LLAVA_MCQA_VIDEOMME
from mapflow.knockout.flows import Window

FAMILIES = ["llava_next_video", "llava_onevision", "qwen2_5_vl", "qwen3_vl", "internvl", "videollama3"]
FRAMES, HEIGHT, WIDTH = 8, 240, 320  # 8 frames of a 320 x 240 clip: the paper's frame count, a common video size

# The id the processor repeats for the video's features, per published config.json.
VIDEO_IDS = {
    "llava_next_video": 32000,
    "llava_onevision": 151647,
    "qwen2_5_vl": 151656,
    "qwen3_vl": 151656,
    "internvl": 151667,
    "videollama3": 151656,
}
# The published answer ids: LLaMA's "A" (29909) and "▁A" (319); Qwen's byte-level "A" (32) and " A" (362).
LLAMA_A, LLAMA_SPACE_A, QWEN_A, QWEN_SPACE_A = 29909, 319, 32, 362


@pytest.fixture(scope="session")
def real_dirs(tmp_path_factory, real_tokenizers):
    from mapflow.testing.real_inputs import build_real_inputs_checkpoint

    root = tmp_path_factory.mktemp("real_inputs")
    built = {}

    def get(family):
        if family not in built:
            built[family] = build_real_inputs_checkpoint(family, root / family, seed=3)
        return built[family]

    return get


@pytest.fixture(scope="session")
def real_loaded(real_dirs):
    from mapflow.models import load_adapter

    cache = {}

    def get(family, dtype="float32"):
        if (family, dtype) not in cache:
            cache[family, dtype] = load_adapter(
                real_dirs(family), attn_implementation="eager", dtype=dtype, self_test=False
            )  # `check` runs the self-test
        return cache[family, dtype]

    return get


@pytest.fixture(scope="session")
def clip():
    return np.random.default_rng(5).integers(0, 256, (FRAMES, HEIGHT, WIDTH, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def mcq():
    """A question whose answer is A, so the published ids of "A" / "▁A" are the ones checked."""
    return Sample(
        "moving_direction/0001",
        "moving_direction",
        "unused.mp4",
        "Which direction does the red square move in the video?",
        ("Up and to the left.", "Up and to the right.", "Down and to the left."),
        0,
    )


def template_of(adapter):
    return adapter.prompt_template or LLAVA_MCQA


def context(adapter, sample, clip, **config):
    return study_context(adapter, sample, clip, template_of(adapter), samples="all", **config)


@pytest.mark.parametrize("family", FAMILIES)
def test_check_passes(family, real_loaded):
    from mapflow.api import check

    report = check(real_loaded(family))
    assert report["ok"], report.get("error")
    assert report["family"] == family


def rendered_prompt(adapter, sample):
    """The full prompt text, written here from the template's pieces and the processor's own chat template."""
    template = template_of(adapter)
    user = (
        template.between_video_and_question
        + template.question_prefix
        + sample.question
        + template.options_header
        + template.option_separator.join(sample.formatted_options)
        + template.options_trailer
        + template.post_prompt
    )
    if adapter.family == "llava_next_video":  # a raw prompt, no chat template
        return template.before_video + adapter.processor.video_token + user + template.answer_prompt
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": user}]}]
    return (
        adapter.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        + template.answer_prompt
    )


def tokens_in(offsets, text, start, stop):
    """Positions of the tokens whose visible characters lie in ``text[start:stop]`` (a whitespace-only token: whose
    first character does); a token with visible characters on both sides of a border is an error."""
    inside = []
    for pos, (a, b) in enumerate(offsets):
        if a == b:
            continue  # a BOS the tokenizer adds
        visible = [i for i in range(a, b) if not text[i].isspace()] or [a]
        hits = [start <= i < stop for i in visible]
        assert all(hits) or not any(hits), f"token {text[a:b]!r} crosses the border of {text[start:stop]!r}"
        if all(hits):
            inside.append(pos)
    return inside


def qwen_smart_resize(height, width, factor, min_pixels, max_pixels):
    """Qwen's published resizing rule (sides multiples of ``factor``, pixel count within the bounds)."""
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = math.floor(height / beta / factor) * factor, math.floor(width / beta / factor) * factor
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def published_tokens_per_unit(family):
    """Feature tokens per frame unit from the published processor settings (None: frames are separate runs,
    counted from the ids)."""
    if family == "llava_next_video":
        return (336 // 14 // 2) ** 2  # CLIP 336 px, patch 14, 2x2 average pooling
    if family == "llava_onevision":
        return math.ceil(384 // 14 / 2) ** 2  # SigLIP 384 px, patch 14, bilinear pooling to half size
    if family == "internvl":
        return 256  # image_seq_length
    if family == "qwen2_5_vl":
        h, w = qwen_smart_resize(HEIGHT, WIDTH, 28, 128 * 28 * 28, 768 * 28 * 28)
        return (h // 28) * (w // 28)
    return None


@pytest.mark.parametrize("family", FAMILIES)
def test_spans_match_the_tokenizers_offsets(family, real_loaded, mcq, clip):
    adapter = real_loaded(family)
    template = template_of(adapter)
    prepared = context(adapter, mcq, clip).prepared
    layout = prepared.layout
    text = rendered_prompt(adapter, mcq)
    assert prepared.text == text

    # The prompt with its one video placeholder, tokenized here; the model input is it with the placeholder expanded.
    encoded = adapter.tokenizer(text, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    placeholder = adapter.tokenizer.convert_tokens_to_ids(adapter.processor.video_token)
    assert ids.count(placeholder) == 1
    at = ids.index(placeholder)
    model_ids = prepared.inputs["input_ids"][0].tolist()
    shift = len(model_ids) - len(ids)
    assert model_ids[:at] == ids[:at] and model_ids[at + 1 + shift :] == ids[at + 1 :]

    def expected(start, stop):
        return [p if p < at else p + shift for p in tokens_in(offsets, text, start, stop)]

    def span_of(piece, start=0):
        begin = text.index(piece, start)
        return begin, begin + len(piece)

    q_start, q_stop = span_of(mcq.question)
    assert layout.positions("question_text").tolist() == expected(q_start, q_stop)
    cursor = q_stop
    for letter, option in zip(mcq.option_letters, mcq.formatted_options):
        start, cursor = span_of(option, cursor)
        assert layout.positions(f"option_{letter}").tolist() == expected(start, cursor), letter
    block_start = text.index(template.question_prefix, text.index(adapter.processor.video_token))
    assert layout.positions("question").tolist() == expected(block_start, cursor)
    post_start, post_stop = span_of(template.post_prompt, cursor)
    assert layout.positions("post_prompt").tolist() == expected(post_start, post_stop)
    if template.answer_prompt:
        answer_start = text.rindex(template.answer_prompt)
        assert layout.positions("answer_prompt").tolist() == expected(answer_start, len(text))
    assert layout.positions("last").tolist() == [len(model_ids) - 1]

    # Video: every published video id; frame units are its runs, or one run cut into equal units.
    video = np.flatnonzero(np.asarray(model_ids) == VIDEO_IDS[family])
    if family == "llava_onevision":
        video = video[:-1]  # the learned newline closing the video belongs to no frame
    assert layout.positions("video").tolist() == video.tolist()
    runs = np.split(video, np.flatnonzero(np.diff(video) != 1) + 1)
    units = FRAMES // 2 if family.startswith("qwen") else FRAMES
    if len(runs) == 1:
        runs = np.split(video, units)
    assert len(runs) == units
    per_unit = published_tokens_per_unit(family)
    for i, run in enumerate(runs):
        assert layout.positions(f"frame_{i}").tolist() == run.tolist()
        assert per_unit is None or len(run) == per_unit, (family, i, len(run), per_unit)
    assert len({len(run) for run in runs}) == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_answer_token_is_the_published_id(family, real_loaded, mcq, clip):
    adapter = real_loaded(family)
    ids = {rule: context(adapter, mcq, clip, gt_token=rule).answer_token_id() for rule in ("continuation", "vocab")}
    tokenizer = adapter.tokenizer
    if family == "llava_next_video":
        # after "Best option:(" the letter is the bare piece "A", which is also the vocabulary entry
        assert ids == {"continuation": LLAMA_A, "vocab": LLAMA_A}
        assert tokenizer.convert_ids_to_tokens([LLAMA_A, LLAMA_SPACE_A]) == ["A", "\u2581A"]
        # written with nothing before it (a prompt ending at a turn boundary) the letter is "▁A", the vocabulary
        # entry stays "A": the two rules differ there
        assert adapter.continuation_token_id("", "A") == LLAMA_SPACE_A
        video_mme = study_context(adapter, mcq, clip, LLAVA_MCQA_VIDEOMME, gt_token="continuation")
        assert video_mme.answer_token_id() == LLAMA_A
    else:
        assert ids == {"continuation": QWEN_A, "vocab": QWEN_A}
        assert tokenizer.convert_ids_to_tokens([QWEN_A, QWEN_SPACE_A]) == ["A", "\u0120A"]
        assert tokenizer.decode([QWEN_A]) == "A" and tokenizer.decode([QWEN_SPACE_A]) == " A"


def test_video_mme_continuation_on_byte_level_bpe(real_loaded, mcq, clip):
    """Video-MME's prompt ends with 'Best option:'; Qwen's BPE merges ':A' (55648) when the pair is tokenized, but the
    model's prompt already ends with ':', so the letter it reads next is 'A' on its own."""
    adapter = real_loaded("qwen2_5_vl")
    ctx = study_context(adapter, mcq, clip, LLAVA_MCQA_VIDEOMME, gt_token="continuation")
    assert adapter.tokenizer.decode([ctx.answer_token_id()]) == "A"


@pytest.mark.parametrize("family", FAMILIES)
def test_cross_frame_fast_equals_naive(family, real_loaded, mcq, clip):
    """On the first 4 frames (2 of Qwen's temporal groups): each naive run projects every position onto the
    published vocabulary, so 8 frames would take minutes here."""

    window = Window("center", 3)
    adapter, adapter64 = real_loaded(family), real_loaded(family, "float64")
    cells = {}
    for name, model, plan in (("auto", adapter, "auto"), ("naive", adapter, "naive"), ("exact", adapter64, "naive")):
        ds = context(model, mcq, clip[:4], plan=plan).sweep(["cross_frame"], window=window)
        cells[name] = torch.from_numpy(np.stack([ds["p_knockout"].values, ds["p_gt_knockout"].values]))
        cells[name + "_base"] = float(ds["p_base"])
    assert_float32_exact(cells["auto"], cells["naive"], cells["exact"], f"{family} cross_frame")
    # the cut reaches the model: some layer window moves the prediction's probability
    assert (cells["naive"][0] - cells["naive_base"]).abs().max() > 0
