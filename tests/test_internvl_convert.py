"""The paper's Mini-InternVL-4B-Video-FT (original InternVL-Chat layout): a tiny checkpoint written by a
re-implementation of the original forward (InternViT, pixel shuffle, mlp1, Phi-3), converted, loaded in the native
`InternVLForConditionalGeneration`, gives the same logits; a wrong mapping does not. The adapter lays the video out as
the paper does: one ``<img>…</img>`` run in the Phi-3 conversation text."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from mapflow.errors import ModelLoadError
from mapflow.inputs.prompts import INTERNVL_PHI3_MCQA, SYSTEM_MVBENCH, mcqa_segments
from mapflow.models import load_adapter
from mapflow.models.internvl_convert import convert_config, convert_internvl_chat_checkpoint, convert_state_dict

IMAGE, PATCH, FRAMES = 112, 14, 3  # 8x8 patches -> 4x4 = 16 tokens per frame after the pixel shuffle
TOKENS_PER_FRAME = (IMAGE // PATCH // 2) ** 2
SPECIALS = ["<|endoftext|>", "<s>", "<|user|>", "<|assistant|>", "<|end|>", "<img>", "</img>", "<IMG_CONTEXT>"]


def original_config(vocab_size: int, **changes) -> dict:
    """An original InternVL-Chat config.json (Mini-InternVL-Chat-4B-V1-5 shape, shrunk)."""
    vision = dict(
        architectures=["InternVisionModel"],
        model_type="intern_vit_6b",
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=IMAGE,
        patch_size=PATCH,
        qkv_bias=True,
        qk_normalization=False,
        norm_type="layer_norm",
        layer_norm_eps=1e-6,
        hidden_act="gelu",
        initializer_factor=0.1,
        drop_path_rate=0.0,
        dropout=0.0,
        attention_dropout=0.0,
        use_flash_attn=False,
    )
    head_dim = 16
    llm = dict(
        architectures=["Phi3ForCausalLM"],
        model_type="phi3",
        auto_map={"AutoConfig": "configuration_phi3.Phi3Config"},
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=8192,
        original_max_position_embeddings=4096,
        rope_theta=10000.0,
        rope_scaling={
            "type": "su",
            "short_factor": [1.0 + i / 8 for i in range(head_dim // 2)],
            "long_factor": [2.0] * (head_dim // 2),
        },
        sliding_window=262144,
        embd_pdrop=0.0,
        resid_pdrop=0.0,
        attention_dropout=0.0,
        rms_norm_eps=1e-5,
        hidden_act="silu",
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=4,
        pad_token_id=0,
        initializer_range=0.1,
        use_cache=True,
        torch_dtype="bfloat16",
    )
    config = dict(
        architectures=["InternVLChatModel"],
        model_type="internvl_chat",
        auto_map={"AutoModel": "modeling_internvl_chat.InternVLChatModel"},
        downsample_ratio=0.5,
        force_image_size=IMAGE,
        ps_version="v2",
        select_layer=-1,
        template="phi3-chat",
        torch_dtype="bfloat16",
        vision_config=vision,
        llm_config=llm,
    )
    return {**config, **changes}


class _Module(nn.Module):
    """A named container, so parameters get the original checkpoint's names."""


class OriginalInternVLChat(nn.Module):
    """The original InternVLChatModel forward, written out (eval, no flash attention)."""

    def __init__(self, config: dict):
        from transformers import Phi3Config, Phi3ForCausalLM

        super().__init__()
        vc, self.config = config["vision_config"], config
        dim, eps = vc["hidden_size"], vc["layer_norm_eps"]
        self.vision_model = _Module()
        emb = self.vision_model.embeddings = _Module()
        emb.class_embedding = nn.Parameter(torch.randn(1, 1, dim))
        emb.patch_embedding = nn.Conv2d(3, dim, vc["patch_size"], vc["patch_size"])
        emb.position_embedding = nn.Parameter(torch.randn(1, (vc["image_size"] // vc["patch_size"]) ** 2 + 1, dim))
        self.vision_model.encoder = _Module()
        self.vision_model.encoder.layers = nn.ModuleList()
        for _ in range(vc["num_hidden_layers"]):
            layer = _Module()
            layer.attn = _Module()
            layer.attn.qkv = nn.Linear(dim, 3 * dim, bias=vc["qkv_bias"])
            layer.attn.proj = nn.Linear(dim, dim)
            layer.mlp = _Module()
            layer.mlp.fc1, layer.mlp.fc2 = (
                nn.Linear(dim, vc["intermediate_size"]),
                nn.Linear(vc["intermediate_size"], dim),
            )
            layer.norm1, layer.norm2 = nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps)
            layer.ls1, layer.ls2 = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.ones(dim))
            self.vision_model.encoder.layers.append(layer)
        shuffled, llm_dim = dim * 4, config["llm_config"]["hidden_size"]
        self.mlp1 = nn.Sequential(
            nn.LayerNorm(shuffled), nn.Linear(shuffled, llm_dim), nn.GELU(), nn.Linear(llm_dim, llm_dim)
        )
        llm = {
            k: v
            for k, v in config["llm_config"].items()
            if k not in ("architectures", "auto_map", "rope_scaling", "rope_theta")
        }
        su = config["llm_config"]["rope_scaling"]  # Phi-3 "su" scaling is transformers 5's "longrope"
        rope = dict(
            rope_type="longrope",
            rope_theta=config["llm_config"]["rope_theta"],
            short_factor=su["short_factor"],
            long_factor=su["long_factor"],
            original_max_position_embeddings=llm["original_max_position_embeddings"],
        )
        self.language_model = Phi3ForCausalLM(Phi3Config(**llm, rope_parameters=rope))

    def vit(self, pixel_values):
        emb, heads = self.vision_model.embeddings, self.config["vision_config"]["num_attention_heads"]
        patches = emb.patch_embedding(pixel_values)
        _, _, h, w = patches.shape
        x = torch.cat([emb.class_embedding.expand(len(patches), 1, -1), patches.flatten(2).transpose(1, 2)], 1)
        side = int((emb.position_embedding.shape[1] - 1) ** 0.5)
        grid = emb.position_embedding[:, 1:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = nn.functional.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        x = x + torch.cat([emb.position_embedding[:, :1], grid.reshape(1, -1, h * w).permute(0, 2, 1)], 1)
        states = [x]
        for layer in self.vision_model.encoder.layers:
            b, n, c = x.shape
            q, k, v = layer.attn.qkv(layer.norm1(x)).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
            attn = ((q * (c // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
            x = x + layer.attn.proj((attn @ v).transpose(1, 2).reshape(b, n, c)) * layer.ls1
            x = x + layer.mlp.fc2(nn.functional.gelu(layer.mlp.fc1(layer.norm2(x)))) * layer.ls2
            states.append(x)
        return states  # embeddings, then every layer, as the original hidden_states

    def pixel_shuffle(self, x, ratio):
        n, w, h, c = x.shape
        x = x.view(n, w, int(h * ratio), int(c / ratio)).permute(0, 2, 1, 3)
        x = x.reshape(n, int(h * ratio), int(w * ratio), int(c / ratio**2))
        return x if self.config["ps_version"] == "v1" else x.permute(0, 2, 1, 3)

    def image_features(self, pixel_values):
        feats = self.vit(pixel_values)[self.config["select_layer"]][:, 1:]
        side = int(feats.shape[1] ** 0.5)
        feats = self.pixel_shuffle(feats.reshape(len(feats), side, side, -1), self.config["downsample_ratio"])
        return self.mlp1(feats.reshape(len(feats), -1, feats.shape[-1]))

    def forward(self, pixel_values, input_ids, context_id):
        embeds = self.language_model.get_input_embeddings()(input_ids).clone()
        selected = input_ids == context_id
        embeds[selected] = embeds[selected] * 0.0 + self.image_features(pixel_values).reshape(-1, embeds.shape[-1])
        return self.language_model(inputs_embeds=embeds).logits


def randomize(model: nn.Module, seed: int) -> None:
    """Visible random values everywhere (norm scales and layer scales around 1), so a misplaced tensor shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            scale_like = (
                p.dim() == 1
                and (name.endswith((".ls1", ".ls2")) or "norm" in name or "mlp1.0" in name or "layernorm" in name)
                and name.endswith(("weight", "ls1", "ls2"))
            )
            p.copy_(1 + 0.3 * noise if scale_like else 0.1 * noise)


def original_tokenizer():
    from transformers import PreTrainedTokenizerFast

    from mapflow.testing.tiny import train_byte_level_bpe
    from mapflow.testing.tiny_families import _CHAT_CORPUS

    return PreTrainedTokenizerFast(
        tokenizer_object=train_byte_level_bpe(SPECIALS, corpus=_CHAT_CORPUS, unk_token=None),
        bos_token="<s>",
        eos_token="<|end|>",
        pad_token="<|endoftext|>",
    )


def write_original_checkpoint(out, config: dict, seed: int = 0) -> OriginalInternVLChat:
    """Weights in two shards (vision + projector, language model), config and tokenizer, as OpenGVLab ships them."""
    out.mkdir(parents=True)
    model = OriginalInternVLChat(config).eval()
    randomize(model, seed)
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    shards = {
        "model-00001-of-00002.safetensors": {k: v for k, v in weights.items() if not k.startswith("language")},
        "model-00002-of-00002.safetensors": {k: v for k, v in weights.items() if k.startswith("language")},
    }
    for name, part in shards.items():
        save_file(part, out / name, metadata={"format": "pt"})
    index = {"weight_map": {k: name for name, part in shards.items() for k in part}}
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    (out / "config.json").write_text(json.dumps(config))
    return model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(reference model, original dir, converted dir)."""
    root = tmp_path_factory.mktemp("internvl-chat")
    tokenizer = original_tokenizer()
    config = original_config(len(tokenizer))
    src = root / "Mini-InternVL-Video-FT"
    reference = write_original_checkpoint(src, config, seed=5)
    tokenizer.save_pretrained(src)
    return reference, src, convert_internvl_chat_checkpoint(src, root / "converted")


@pytest.fixture(scope="module")
def prepared_and_adapter(checkpoints):
    from mapflow.data.sample import Sample

    sample = Sample(
        "moving_direction/0000",
        "moving_direction",
        "unused.mp4",
        "Which direction does it move?",
        ("Up.", "Down.", "Left."),
        2,
    )
    adapter = load_adapter(checkpoints[2], attn_implementation="eager")  # eager, as the paper runs it
    frames = np.random.default_rng(1).integers(0, 256, (FRAMES, IMAGE, IMAGE, 3), dtype=np.uint8)
    prepared = adapter.prepare(
        frames,
        mcqa_segments(sample, adapter.prompt_template),
        option_letters=sample.option_letters,
        true_letter=sample.answer_letter,
    )
    return prepared, adapter


def reference_logits(reference, prepared, adapter):
    with torch.no_grad():
        return reference(
            prepared.inputs["pixel_values"], prepared.inputs["input_ids"], adapter.processor.image_token_id
        )[0]


def test_converted_checkpoint_reproduces_the_original_forward(checkpoints, prepared_and_adapter):
    reference = checkpoints[0]
    prepared, adapter = prepared_and_adapter
    with torch.no_grad():
        ours = adapter.hf_model(**prepared.inputs).logits[0]
    expected = reference_logits(reference, prepared, adapter)
    assert ours.shape == expected.shape
    assert (ours - expected).abs().max() <= 1e-5


def test_the_paper_prompt_and_a_single_image_run(prepared_and_adapter):
    prepared, adapter = prepared_and_adapter
    layout, tok = prepared.layout, adapter.tokenizer
    assert adapter.prompt_template is INTERNVL_PHI3_MCQA
    ids = prepared.inputs["input_ids"][0]
    context = "<IMG_CONTEXT>" * (FRAMES * TOKENS_PER_FRAME)
    assert tok.decode(ids) == (
        SYSTEM_MVBENCH + " <|user|>\n<img>" + context + "</img>\n <|user|>\nQuestion: Which "
        "direction does it move?\nOptions:\n(A) Up.\n(B) Down.\n(C) Left. \nOnly give the best "
        "option. <|assistant|>\nBest option:("
    )
    video = layout.positions("video")
    assert list(video) == list(range(video[0], video[0] + FRAMES * TOKENS_PER_FRAME))  # one contiguous run
    assert tok.convert_ids_to_tokens([int(ids[video[0] - 1]), int(ids[video[-1] + 1])]) == ["<img>", "</img>"]
    assert list(layout.positions("video_markup")) == [video[0] - 1, video[-1] + 1]  # not video, as in the paper
    assert [len(f) for f in layout.frames] == [TOKENS_PER_FRAME] * FRAMES
    assert [p for f in layout.frames for p in range(*f.ranges[0])] == list(video)  # frames partition it, in order
    assert layout.video_grid == (FRAMES, 4, 4)


@pytest.mark.parametrize(
    "first, second",
    [
        (
            "model.vision_tower.encoder.layer.0.attention.q_proj.weight",
            "model.vision_tower.encoder.layer.0.attention.k_proj.weight",
        ),  # qkv split in the wrong order
        ("model.vision_tower.encoder.layer.1.lambda_1", "model.vision_tower.encoder.layer.1.lambda_2"),  # ls1 <-> ls2
        (
            "model.vision_tower.encoder.layer.0.layernorm_before.weight",
            "model.vision_tower.encoder.layer.0.layernorm_after.weight",
        ),  # norm1 <-> norm2
    ],
)
def test_a_wrong_mapping_is_caught(checkpoints, prepared_and_adapter, first, second):
    prepared, adapter = prepared_and_adapter
    model = adapter.hf_model
    params = dict(model.named_parameters())
    original = params[first].detach().clone(), params[second].detach().clone()
    try:
        with torch.no_grad():
            params[first].copy_(original[1])
            params[second].copy_(original[0])
            wrong = model(**prepared.inputs).logits[0]
    finally:
        with torch.no_grad():
            params[first].copy_(original[0])
            params[second].copy_(original[1])
    assert (wrong - reference_logits(checkpoints[0], prepared, adapter)).abs().max() > 1e-3


def test_pixel_shuffle_v1_would_differ_and_is_refused(checkpoints, prepared_and_adapter):
    reference, src, _ = checkpoints
    prepared, adapter = prepared_and_adapter
    reference.config["ps_version"] = "v1"  # each frame's 4x4 token grid transposed
    try:
        transposed = reference_logits(reference, prepared, adapter)
    finally:
        reference.config["ps_version"] = "v2"
    with torch.no_grad():
        ours = adapter.hf_model(**prepared.inputs).logits[0]
    assert (ours - transposed).abs().max() > 1e-3
    config = json.loads((src / "config.json").read_text())
    with pytest.raises(ModelLoadError, match="ps_version v1"):
        convert_config({**config, "ps_version": "v1"}, image_token_id=7)
    with pytest.raises(ModelLoadError, match="ps_version v1"):
        convert_config({k: v for k, v in config.items() if k != "ps_version"}, image_token_id=7)  # v1 by default


@pytest.mark.parametrize("select_layer", [-2, 1])
def test_other_feature_layers_index_the_same_hidden_state(checkpoints, prepared_and_adapter, select_layer):
    reference, src, _ = checkpoints
    prepared, adapter = prepared_and_adapter
    config = json.loads((src / "config.json").read_text())
    layer = convert_config({**config, "select_layer": select_layer}, image_token_id=7)["vision_feature_layer"]
    reference.config["select_layer"] = select_layer
    try:
        expected = reference_logits(reference, prepared, adapter)
    finally:
        reference.config["select_layer"] = -1
    with torch.no_grad():
        ours = adapter.hf_model(**prepared.inputs, vision_feature_layer=layer).logits[0]
    assert (ours - expected).abs().max() <= 1e-5


def test_phi3_su_rope_keeps_the_original_frequencies(checkpoints, prepared_and_adapter):
    """The original Phi-3 ``su`` rotary embedding, written out: short factors up to the original context length,
    long factors beyond, cos/sin scaled by sqrt(1 + log(max / original) / log(original))."""
    llm = json.loads((checkpoints[1] / "config.json").read_text())["llm_config"]
    rotary = prepared_and_adapter[1].hf_model.model.language_model.rotary_emb
    dim = llm["hidden_size"] // llm["num_attention_heads"]
    original, longest = llm["original_max_position_embeddings"], llm["max_position_embeddings"]
    scale = math.sqrt(1 + math.log(longest / original) / math.log(original))
    for length, factors in ((100, "short_factor"), (original + 10, "long_factor")):
        positions = torch.arange(length)[None]
        cos, sin = rotary(torch.zeros(1, 1, dim), positions)
        inv_freq = 1.0 / (
            torch.tensor(llm["rope_scaling"][factors]) * llm["rope_theta"] ** (torch.arange(0, dim, 2).float() / dim)
        )
        angles = torch.cat([positions[0, :, None].float() * inv_freq] * 2, -1)
        # the angle is a product of float32 factors (a few ulps of itself); cos and sin move by at most that, times
        # the scale, plus their own rounding
        bound = 4 * torch.finfo(torch.float32).eps * (angles.abs() + 1) * scale
        assert ((cos[0] - angles.cos() * scale).abs() <= bound).all()
        assert ((sin[0] - angles.sin() * scale).abs() <= bound).all()


def test_unsupported_originals_are_refused(checkpoints):
    config = json.loads((checkpoints[1] / "config.json").read_text())
    with pytest.raises(ModelLoadError, match="select_layer 0"):
        convert_config({**config, "select_layer": 0}, image_token_id=7)
    yarn = {**config["llm_config"], "rope_scaling": {"type": "yarn", "factor": 2.0}}
    with pytest.raises(ModelLoadError, match="yarn"):
        convert_config({**config, "llm_config": yarn}, image_token_id=7)
    with pytest.raises(ModelLoadError, match="no place"):
        convert_state_dict({"vision_model.head.weight": torch.zeros(1)})


def test_knockouts_and_a_short_study_run_on_the_converted_checkpoint(
    checkpoints, prepared_and_adapter, tiny_benchmark, tmp_path
):
    import xarray as xr

    from mapflow.cli import main
    from mapflow.knockout.engine import KnockoutConfig, run_knockouts
    from mapflow.knockout.flows import Flow

    prepared, adapter = prepared_and_adapter
    configs = [
        KnockoutConfig(torch.from_numpy(Flow.parse(flow).block_matrix(prepared.layout)), (layer,))
        for flow in ("cross_frame", "video->last", "video_markup->last")
        for layer in (0, 1)
    ]
    naive = run_knockouts(adapter, prepared, configs, plan="naive")
    assert (naive - run_knockouts(adapter, prepared, configs, plan="auto")).abs().max() <= 1e-5
    assert not torch.equal(naive[0], naive[2])
    out = tmp_path / "flow.zarr"
    assert (
        main(
            [
                "run",
                "information_flow",
                "--model",
                str(checkpoints[2]),
                "--data",
                str(tiny_benchmark),
                "--out",
                str(out),
                "--window",
                "1",
                "--samples",
                "all",
                "--limit",
                "1",
                "--tasks",
                "moving_direction",
                "--frames",
                "2",
                "--no-progress",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    ds = xr.open_zarr(out)
    assert ds.attrs["provenance"]["config"]["prompt_template"] == INTERNVL_PHI3_MCQA.name
    assert np.isfinite(ds.rel_change.values).all()
