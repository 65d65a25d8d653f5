"""VideoLLaMA3 as the released code runs it (mapflow.models.videollama3): frame sizes of the released image processor,
the released chat template, and frame-pair knockouts that cut the frames' runs (labels included) like cross_frame.
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import xarray as xr
from test_fidelity import _hidden_under

from mapflow.inputs.prompts import build_prompt
from mapflow.knockout.flows import Flow

# The released chat template: DEFAULT_CHAT_TEMPLATE of DAMO-NLP-SG/VideoLLaMA3 `videollama3/model/processor.py`
# (read from the mirror ykeselman/DAMO-NLP-SG-VideoLLaMA3 @ c707283), the template the paper's code renders with
# (spec §1.1); its DEFAULT_IMAGE_TOKEN is passed in as `image_token`. Published text, kept verbatim.
RELEASED_CHAT_TEMPLATE = """
{%- set identifier = 'im' %}
{% for message in messages %}
    {% if message['role'] == 'stream' %}
        {% set identifier = 'stream' %}
    {% else %}
        {% set identifier = 'im' %}
    {% endif %}
    {{- '<|' + identifier + '_start|>' + message['role'] + '\\n' -}}
    {% if message['content'] is string %}
        {{- message['content'] + '<|' + identifier + '_end|>\\n' -}}
    {% else %}
        {% for content in message['content'] %}
            {% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}
                {% if 'time' in content %}
                    {{- 'Time ' + content['time'] | round(1) | string + 's: ' -}}
                {% endif %}
                {{- image_token + '\\n' -}}
            {% elif content['type'] == 'video' or 'video' in content or 'video_url' in content %}
                {% for i in range(content['num_frames']) %}
                    {% if 'timestamps' in content %}
                        {{- 'Time ' + content['timestamps'][i] | round(1) | string + 's:' -}}
                    {% endif %}
                    {% if i < content['num_frames'] - 1 %}
                        {{- image_token + ',' -}}
                    {% else %}
                        {{- image_token + '\\n' -}}
                    {% endif %}
                {% endfor %}
            {% elif content['type'] == 'text' or 'text' in content %}
                {{- content['text'] -}}
            {% endif %}
        {% endfor %}
        {{- '<|' + identifier + '_end|>\\n' -}}
    {% endif %}
{% endfor %}
{% if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' -}}
{% endif %}
"""
FACTOR = 28  # patch 14 x merge 2
RELEASED_MIN_TOKENS = 16  # Videollama3ImageProcessor(min_tokens=4 * 4)
CHECKPOINT_MIN_TOKENS = 128  # the converted checkpoint's video processor: shortest_edge = 128 * 28 * 28


def released_frame_tokens(
    height: int, width: int, frames: int, per_frame: int = 144, min_tokens: int = RELEASED_MIN_TOKENS
) -> int:
    """Merged tokens of one frame under the released `simple_batched_resize` (its rule, written out plainly):
    sides to the nearest multiple of 28; above the per-frame budget (max_tokens // frames, max_tokens = frames * 144)
    scale down keeping the aspect, sides floored; below the minimum scale up, sides ceiled."""
    max_pixels = frames * per_frame * FACTOR * FACTOR // frames
    min_pixels = min_tokens * FACTOR * FACTOR
    h, w = round(height / FACTOR) * FACTOR, round(width / FACTOR) * FACTOR
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = math.floor(height / beta / FACTOR) * FACTOR, math.floor(width / beta / FACTOR) * FACTOR
    if h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / FACTOR) * FACTOR, math.ceil(width * beta / FACTOR) * FACTOR
    return (h // FACTOR) * (w // FACTOR)


@pytest.fixture(scope="module")
def videollama3(tmp_path_factory):
    from mapflow.models import load_adapter
    from mapflow.testing.tiny_families import build_tiny_family

    root = tmp_path_factory.mktemp("vl3_released")
    return load_adapter(
        build_tiny_family("videollama3", root / "vl3", seed=4, num_layers=2), attn_implementation="sdpa"
    )


def prepare(adapter, sample, frames, timestamps=None):
    prompt = build_prompt(sample, adapter.prompt_template)
    return adapter.prepare(
        frames,
        prompt.segments,
        option_letters=prompt.option_letters,
        true_letter=prompt.true_letter,
        timestamps=timestamps,
    )


# ---- (a) frame size -------------------------------------------------------------------------------------------------


def test_a_320x240_frame_keeps_its_99_tokens():
    # nearest multiples of 28: 240 -> 252 (9), 320 -> 308 (11); 99 lies inside [16, 144], so nothing is rescaled
    assert round(240 / FACTOR) * round(320 / FACTOR) == 99
    assert released_frame_tokens(240, 320, frames=8) == 99
    # the converted checkpoint's minimum of 128 tokens would upscale the frame (the 140)
    assert released_frame_tokens(240, 320, frames=8, min_tokens=CHECKPOINT_MIN_TOKENS) == 140


@pytest.mark.parametrize("height, width", [(240, 320), (480, 640), (40, 48), (56, 400)])
def test_frame_tokens_follow_the_released_rule(videollama3, sample, height, width):
    """Kept (320x240), scaled down to the 144-token budget (640x480), scaled up to the released minimum (48x40),
    and a wide frame; the adapter's per-frame token counts equal the released rule's."""
    frames = np.random.default_rng(0).integers(0, 256, (4, height, width, 3), dtype=np.uint8)
    layout = prepare(videollama3, sample, frames).layout
    expected = released_frame_tokens(height, width, frames=4)
    assert [len(f) for f in layout.frames] == [expected] * 4
    assert RELEASED_MIN_TOKENS <= expected <= 144


# ---- (b) the released chat template ----------------------------------------------------------------------------------


def test_prompt_equals_the_released_template(videollama3, sample):
    """The prompt mapflow renders (chat template + processor expansion) equals the released template rendered for the
    same message (the video's frames with their times, then the instruction), each frame's image token expanded to
    that frame's tokens, as the released `process_text` does."""
    times = [0.0, 1.25, 2.5, 3.75]
    frames = np.random.default_rng(2).integers(0, 256, (4, 56, 84, 3), dtype=np.uint8)
    prepared = prepare(videollama3, sample, frames, timestamps=times)
    layout = prepared.layout
    instruction = "".join(
        s.text for s in prepared.segments if s.name not in ("video",) and not s.name.startswith("template_")
    )
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "video", "num_frames": len(times), "timestamps": times},
                {"type": "text", "text": instruction},
            ],
        }
    ]
    marker = "\u2063FRAME\u2063"
    released = videollama3.tokenizer.apply_chat_template(
        messages, chat_template=RELEASED_CHAT_TEMPLATE, tokenize=False, add_generation_prompt=True, image_token=marker
    )
    pieces = released.split(marker)
    assert len(pieces) == len(layout.frames) + 1
    pad = videollama3.processor.video_token
    expanded = pieces[0] + "".join(pad * len(f) + rest for f, rest in zip(layout.frames, pieces[1:]))
    ids = prepared.inputs["input_ids"][0].tolist()
    assert videollama3.tokenizer.decode(ids) == expanded
    assert videollama3.tokenizer(expanded, add_special_tokens=False)["input_ids"] == ids
    assert "Time 1.2s:" in expanded and released.startswith("<|im_start|>user\nTime 0.0s:")


# ---- (c) frame pairs cut runs ----------------------------------------------------------------------------------------


def test_frame_pair_cuts_the_runs_labels_included(videollama3, sample):
    """Change only frame 1's time label: under frame_pairs (1, 2) in every layer no position of run 2 moves (it reads
    runs 0 and 2 only, which did not change); cutting the feature tokens only lets the label through."""
    frames = np.random.default_rng(1).integers(0, 256, (4, 56, 56, 3), dtype=np.uint8)
    a = prepare(videollama3, sample, frames, timestamps=[0.5, 1.0, 1.5, 2.0])
    b = prepare(videollama3, sample, frames, timestamps=[0.5, 1.3, 1.5, 2.0])
    assert a.layout.seq_len == b.layout.seq_len
    differ = np.flatnonzero((a.inputs["input_ids"][0] != b.inputs["input_ids"][0]).numpy())
    assert differ.size and set(differ.tolist()) <= set(a.layout.runs[1].positions().tolist())  # only run 1 changed
    run_2 = a.layout.runs[2].positions()

    pair = Flow.parse("frame_run_1->frame_run_2").block_matrix(a.layout)
    rows, cols = np.nonzero(pair)
    assert set(rows) == set(run_2) and set(cols) == set(a.layout.runs[1].positions())
    # the same float ops on the same inputs: only a read of run 1 could make run 2 differ
    assert torch.equal(_hidden_under(videollama3, a, pair)[run_2], _hidden_under(videollama3, b, pair)[run_2])

    tokens_only = Flow.parse("frame_1->frame_2").block_matrix(a.layout)
    leak = _hidden_under(videollama3, a, tokens_only)[run_2] - _hidden_under(videollama3, b, tokens_only)[run_2]
    assert leak.abs().max() > 1e-4  # the feature-token cut leaks frame 1's label into run 2


@pytest.mark.parametrize(
    "options, expected",
    [
        ({}, ["frame_run_0->frame_run_1", "frame_run_0->frame_run_2", "frame_run_1->frame_run_2"]),
        ({"unit": "tokens"}, ["frame_0->frame_1", "frame_0->frame_2", "frame_1->frame_2"]),
        ({"by": "distance"}, ["frame_distance:1", "frame_distance:2"]),
        ({"by": "distance", "unit": "tokens"}, ["frame_distance_tokens:1", "frame_distance_tokens:2"]),
    ],
)
def test_frame_pairs_study_sweeps_runs_unless_told(videollama3, sample, options, expected):
    import mapflow.studies.frame_pairs as frame_pairs
    from mapflow.analysis.context import StudyConfig

    frames = np.random.default_rng(3).integers(0, 256, (3, 56, 56, 3), dtype=np.uint8)
    layout = prepare(videollama3, sample, frames).layout
    swept = []

    def record(ctx, flows):
        swept.extend(flows)
        for flow in flows:  # every flow resolves on this layout
            Flow.parse(flow).block_matrix(ctx.layout)
        return xr.Dataset({"rel_change": (("flow",), np.zeros(len(flows)))}, coords={"flow": list(flows)})

    ctx = SimpleNamespace(config=StudyConfig(options=options), layout=layout)
    ctx.sweep = lambda flows: record(ctx, flows)
    frame_pairs.run(ctx)
    assert swept == expected


def test_run_distances_partition_cross_frame(videollama3, sample):
    frames = np.random.default_rng(3).integers(0, 256, (4, 56, 56, 3), dtype=np.uint8)
    layout = prepare(videollama3, sample, frames).layout
    for distance, cross in (("frame_distance", "cross_frame"), ("frame_distance_tokens", "cross_frame_tokens")):
        total = sum(Flow.parse(f"{distance}:{d}").block_matrix(layout).astype(int) for d in range(1, 4))
        assert np.array_equal(total, Flow.parse(cross).block_matrix(layout).astype(int))
