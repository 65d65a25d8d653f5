"""7B shapes: the published configurations, weights allocated where they run in the dtype they run in (no float32
copy), transformers' own initialisation (buffers included), and device maps."""

import pytest
import torch

from mapflow.errors import ModelLoadError
from mapflow.testing.shapes import SHAPES, build_shape, random_model, weight_bytes


def tiny_models():
    from transformers import LlavaNextVideoForConditionalGeneration

    from mapflow.testing.tiny import tiny_llava_next_video_config
    from mapflow.testing.tiny_families import TINY_BUILDERS

    qwen, _ = TINY_BUILDERS["qwen2_5_vl"](2, 64)
    return {
        "llava_next_video": (LlavaNextVideoForConditionalGeneration, tiny_llava_next_video_config(512, 4, 5)),
        "qwen2_5_vl": (type(qwen), qwen.config),
    }


@pytest.mark.parametrize("family", ["llava_next_video", "qwen2_5_vl"])
def test_random_model_is_allocated_in_place_with_the_usual_initialisation(family):
    model_class, config = tiny_models()[family]
    torch.manual_seed(0)
    usual = model_class(config)  # built the ordinary way: float32 on CPU
    model = random_model(model_class, config, dtype=torch.bfloat16, seed=3)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in model.parameters()} | {b.device.type for b in model.buffers()} == {"cpu"}
    buffers = dict(model.named_buffers())
    assert buffers  # rotary tables, position ids: computed, not left uninitialised
    for name, expected in usual.named_buffers():
        assert torch.equal(buffers[name], expected.to(buffers[name].dtype)), name
    # weights: the model's own scheme (norms at one, linear layers ~ N(0, initializer_range)), seeded
    params = dict(model.named_parameters())
    norms = [p for n, p in params.items() if n.endswith("norm.weight")]
    assert norms and all(bool((p == 1).all()) for p in norms)
    linear = params["lm_head.weight"].detach().float()
    std = config.get_text_config().initializer_range
    assert abs(float(linear.std()) - std) < 0.1 * std
    again = dict(random_model(model_class, config, dtype=torch.bfloat16, seed=3).named_parameters())
    other = dict(random_model(model_class, config, dtype=torch.bfloat16, seed=4).named_parameters())
    assert all(torch.equal(params[n], again[n]) for n in params)
    assert not torch.equal(params["lm_head.weight"], other["lm_head.weight"])


def test_device_maps_place_every_weight_and_refuse_disk():
    model_class, config = tiny_models()["llava_next_video"]
    auto = random_model(model_class, config, dtype=torch.float16, device_map="auto")  # CPU only here: one device
    assert {p.device.type for p in auto.parameters()} == {"cpu"} and auto.dtype == torch.float16
    explicit = {"model.vision_tower": "cpu", "model.language_model": "cpu", "": "cpu"}
    assert {
        p.device.type for p in random_model(model_class, config, dtype=torch.float16, device_map=explicit).parameters()
    } == {"cpu"}
    with pytest.raises(ModelLoadError, match="on disk"):
        random_model(model_class, config, dtype=torch.float16, device_map={"": "disk"})
    with pytest.raises(ModelLoadError, match="places no module"):
        random_model(model_class, config, dtype=torch.float16, device_map={"model.vision_tower": "cpu"})


def test_shapes_have_the_published_configurations(real_tokenizers):
    expected = {  # parameters of the published checkpoints
        "llava-next-video-7b": (7.06e9, 32, 4096, 32, 32, 11008, 32064),
        "qwen2.5-vl-7b": (8.29e9, 28, 3584, 28, 4, 18944, 152064),
    }
    for name, (params, layers, hidden, heads, kv_heads, intermediate, vocab) in expected.items():
        shape = SHAPES[name]
        model_class, config, processor = shape.build(shape.text_layers, shape.vision_layers)
        text = config.get_text_config()
        assert (
            text.num_hidden_layers,
            text.hidden_size,
            text.num_attention_heads,
            text.num_key_value_heads,
            text.intermediate_size,
            text.vocab_size,
        ) == (layers, hidden, heads, kv_heads, intermediate, vocab)
        with torch.device("meta"):  # counts without allocating
            model = model_class._from_config(config, dtype=torch.bfloat16)
        assert abs(sum(p.numel() for p in model.parameters()) / params - 1) < 0.005, name


def test_shapes_use_the_published_tokenizers_and_token_ids(real_tokenizers):
    """The processors hold the published tokenizers, and the configurations' media token ids are the published ones
    (LLaVA-NeXT-Video-7B-hf: <video> 32000, <image> 32001; Qwen2.5-VL-7B: 151652/151653/151655/151656)."""
    published = {
        "llava-next-video-7b": (
            {"video_token_id": 32000, "image_token_id": 32001},
            32002,
            ("Hello world", [1, 15043, 3186]),
        ),
        "qwen2.5-vl-7b": (
            {
                "video_token_id": 151656,
                "image_token_id": 151655,
                "vision_start_token_id": 151652,
                "vision_end_token_id": 151653,
            },
            151669,
            ("<|im_start|>user\n", [151644, 872, 198]),
        ),
    }
    for name, (ids, tokens, (text, encoded)) in published.items():
        _, config, processor = SHAPES[name].build(1, 1)
        tokenizer = processor.tokenizer
        assert {key: getattr(config, key) for key in ids} == ids, name
        assert len(tokenizer) == tokens <= config.get_text_config().vocab_size, name
        assert tokenizer(text).input_ids == encoded, name
    tokenizer = SHAPES["llava-next-video-7b"].build(1, 1)[2].tokenizer
    assert tokenizer("a<video><video>b").input_ids == [1, 263, 32000, 32000, 289]  # one id per placeholder


def test_no_float32_copy_is_made_while_building():
    """Peak resident memory while building a ~150M-parameter bf16 model stays near its bf16 size (a float32 copy of
    the weights would add twice that)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from mapflow.knockout.sweep_bench import PeakMemory

    config = LlamaConfig(
        vocab_size=32064,
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=8,
    )
    with PeakMemory() as memory:
        model = random_model(LlamaForCausalLM, config, dtype=torch.bfloat16)
    size = weight_bytes(model) / 2**20
    assert size > 200
    assert memory.growth_mib <= 1.3 * size + 32, (memory.growth_mib, size)


def test_bad_shape_options_are_named():
    with pytest.raises(ModelLoadError, match="unknown shape 'llava-13b'"):
        build_shape("llava-13b")
    with pytest.raises(ModelLoadError, match="layers must be between 1 and 32, got 40"):
        build_shape("llava-next-video-7b", text_layers=40)
    with pytest.raises(ModelLoadError, match="unknown dtype 'int8'"):
        build_shape("llava-next-video-7b", dtype="int8")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="no CUDA device"):
            build_shape("llava-next-video-7b", device="cuda")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SHAPES))
def test_a_reduced_7b_shape_runs_with_its_published_token_layout(name, tiny_benchmark, real_tokenizers):
    """One decoder and one vision layer of the real widths in bf16 (~1-3 GB): loads (the self-test cuts edges and
    checks an empty knockout is exact) and lays out its frames as the published model does."""
    from mapflow.data import load_tvbench
    from mapflow.inputs.prompts import mcqa_segments, resolve_template
    from mapflow.knockout.engine import KnockoutConfig, run_knockouts
    from mapflow.knockout.flows import Flow
    from mapflow.knockout.sweep_bench import _clip

    adapter = build_shape(name, text_layers=1, vision_layers=1)
    assert adapter.num_layers == 1 and adapter.hf_model.dtype == torch.bfloat16
    sample = load_tvbench(tiny_benchmark, limit=1, seed=0)[0]
    template = resolve_template(None, adapter.prompt_template, "tvbench")
    prepared = adapter.prepare(
        _clip(sample, 2),
        mcqa_segments(sample, template),
        option_letters=sample.option_letters,
        true_letter=sample.answer_letter,
    )
    assert [len(f) for f in prepared.layout.frames] == [SHAPES[name].tokens_per_unit] * (2 if "llava" in name else 1)
    blocked = torch.from_numpy(Flow.parse("video->last").block_matrix(prepared.layout))
    naive, fast = (
        run_knockouts(adapter, prepared, [KnockoutConfig(blocked, (0,))], plan=plan) for plan in ("naive", "auto")
    )
    assert (naive.softmax(-1) - fast.softmax(-1)).abs().max() <= 1e-3
