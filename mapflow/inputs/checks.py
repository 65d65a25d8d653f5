"""Checks on what a user hands a run, made before any work: paths, options against the model and data, and the
per-sample limits (context length, option letters, study result type) that turn a bad input into one failed sample.

Option checks raise a `MapflowError` naming the option and its valid range, and run before the result store is
created, so a bad command leaves nothing behind that a later run would be tied to. The checks that know flows and
windows (the knockout layer's terms) are `mapflow.analysis.run_checks`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..data.sample import OPTION_LETTERS
from ..errors import DataError, MapflowError, StudyError

# Spans every layout has (see `mapflow.inputs.tokenization.build_layout`); the template's segments and frames come on top.
LAYOUT_SPANS = (
    "video",
    "video_markup",
    "video_block",
    "question",
    "non_option_question",
    "true_option",
    "false_options",
    "last",
)
HALF_PRECISION_NOTE = (
    "note: --dtype {dtype} on CPU: half precision moves rel_change against float32 (on the "
    "embedded organism by up to ~0.6 points in float16 and ~2.4 in bfloat16); use float32 for "
    "numbers you compare with float32 runs"
)


def user_path(text: str) -> Path:
    """A path as the user typed it, resolved once at the edge: ``~`` expanded (also when quoted, so no ``./~`` folder
    appears) and made absolute against the current directory, so nothing later depends on the working directory."""
    return Path(os.path.expanduser(text)).absolute()


def half_precision_note(dtype: str, device: str, device_map) -> str | None:
    """The note a CPU run in float16/bfloat16 prints (None otherwise)."""
    if dtype in ("float16", "fp16", "bfloat16", "bf16") and device_map is None and str(device).startswith("cpu"):
        return HALF_PRECISION_NOTE.format(dtype=dtype)
    return None


# --- options against the model and the data (before the store exists) ----------------------------------------------


def is_whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_limit(limit: int | None) -> None:
    if limit is not None and (not is_whole(limit) or limit < 1):
        raise MapflowError(f"--limit {limit!r}: give a positive number of samples per task (or leave it out for all)")


def check_frames(frames: int | None) -> None:
    if frames is not None and (not is_whole(frames) or frames < 1):
        raise MapflowError(
            f"--frames {frames!r}: give a positive number of frames per video (default: the benchmark's, 8)"
        )


def check_threads(threads: int | None) -> None:
    if threads is not None and (not is_whole(threads) or threads < 1):
        raise MapflowError(
            f"--threads {threads!r}: give a positive number of CPU threads (or leave it out: 1 for the "
            "embedded models, torch's default for a --model)"
        )


DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


def check_device(device, device_map=None) -> None:
    """--device names a device torch knows and this machine has (a --device-map is accelerate's to check)."""
    import torch

    if device_map is not None:
        return
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise MapflowError(f"--device {device!r}: not a device; use cpu, cuda, cuda:N, mps or xpu") from None
    if parsed.type not in DEVICE_TYPES:
        raise MapflowError(f"--device {device}: mapflow runs models on {', '.join(DEVICE_TYPES)}, not {parsed.type}")
    if parsed.type == "cpu":
        return
    backend = getattr(torch, parsed.type, None) if parsed.type != "mps" else torch.backends.mps
    available = bool(backend is not None and backend.is_available())
    count = torch.cuda.device_count() if parsed.type == "cuda" and available else None
    if not available:
        raise MapflowError(
            f"--device {device}: this machine has no {parsed.type} device that torch can use "
            f"(torch.{'backends.mps' if parsed.type == 'mps' else parsed.type}.is_available() is "
            "False); use --device cpu"
        )
    if count is not None and parsed.index is not None and parsed.index >= count:
        raise MapflowError(f"--device {device}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")


def check_store_writable(store) -> None:
    """Refuse a --out this process cannot write, before anything is loaded: a run writes beside the store (its lock
    file), inside every folder of an existing store (resume commits rewrite metadata through temporary files) and
    over its files. ``os.access`` asks the kernel, so a read-only mount, an immutable (``chattr +i``) file or folder
    and missing permissions are all seen, and root's right to ignore permission bits is respected."""
    store = Path(store)
    beside = store.parent
    while not beside.exists() and beside != beside.parent:  # a new store's folders are made from the first that exists
        beside = beside.parent
    places = [beside]
    if store.is_dir():
        for folder, _, files in os.walk(store):
            places.append(Path(folder))
            places.extend(Path(folder) / name for name in files)
    for place in places:
        if not os.access(place, os.W_OK | (os.X_OK if place.is_dir() else 0)):
            role = "the folder that holds the store and its lock file" if place == beside else "part of the store"
            raise MapflowError(
                f"--out {store}: {place} is not writable ({role}); the store cannot be created or "
                "resumed here (read-only file system, immutable file, or no permission): choose "
                "another --out, or copy the store somewhere writable to resume it"
            )


def check_window(window, num_layers: int, window_given: bool = True) -> None:
    """--layers within 0..num_layers and non-empty; a given --window between 1 and the layer count (the default 9
    is the paper's and stays clipped at the ends of a smaller model, as it always was)."""
    if window.style == "ranges":
        for start, stop in window.ranges:
            if not 0 <= start < stop <= num_layers:
                raise MapflowError(
                    f"--layers {start}-{stop}: each range must be 'start-stop' with 0 <= start < stop "
                    f"<= {num_layers} (the model has {num_layers} layers, half-open ranges)"
                )
    elif window.style in ("center", "inverse") and window_given and not 1 <= window.size <= num_layers:
        raise MapflowError(
            f"--window {window.size}: the window size must be between 1 and {num_layers} (the model "
            f"has {num_layers} layers)"
        )


def check_frames_available(samples, num_frames: int, rule: str) -> None:
    """Refuse --frames when no probed video has that many frames (then every sample would fail the same way).

    Videos are probed in order until one is long enough, usually the first; a video that cannot be probed is left to
    its own sample's failure. Some short videos among long ones are failed samples, not a bad option.
    """
    from ..data.video import probe_video

    longest = None
    for sample in samples:
        info = probe_video(sample.video_path)
        if info is None or info.num_frames is None:
            continue
        if info.num_frames >= num_frames:
            return
        longest = max(longest or 0, info.num_frames)
    if longest is not None:
        raise MapflowError(
            f"--frames {num_frames}: no video of the {len(samples)} selected sample(s) has that many "
            f"frames (the longest has {longest}); choose --frames <= {longest}"
        )


# --- per sample ----------------------------------------------------------------------------------------------------


def check_option_letters(sample) -> None:
    """More candidates than letters cannot be written as options (A..Z)."""
    if len(sample.candidates) > len(OPTION_LETTERS):
        raise DataError(
            f"{len(sample.candidates)} candidates; option letters only go up to "
            f"{OPTION_LETTERS[-1]} ({len(OPTION_LETTERS)} options)",
            sample=sample.sample_id,
            field="candidates",
        )


def context_length(adapter) -> int | None:
    """The model's context length (``max_position_embeddings`` of its text config), or None when it states none."""
    value = getattr(adapter.text_config, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


def check_prompt_fits(adapter, prepared, sample) -> None:
    """Refuse an input longer than the model's context: the numbers would be computed at positions it never saw."""
    limit = context_length(adapter)
    if limit is not None and prepared.layout.seq_len > limit:
        raise DataError(
            f"the input is {prepared.layout.seq_len} tokens (video and prompt), longer than the model's "
            f"context length of {limit} (max_position_embeddings); shorten the question or use fewer "
            "frames",
            sample=sample.sample_id,
            field="question",
        )


def check_study_result(study, result) -> None:
    """A study's run(ctx) must return an xarray.Dataset; anything else is a bug in the study, the same for every
    sample, so the run stops (with the study named) instead of failing each sample in turn."""
    import xarray as xr

    if not isinstance(result, xr.Dataset):
        name = getattr(study, "study_name", None) or getattr(study, "__file__", None) or getattr(study, "__name__", "?")
        raise StudyError(
            f"study {name} returned {type(result).__name__}, not an xarray.Dataset: its run(ctx) must "
            "return one Dataset of this sample's results (e.g. from ctx.sweep(flows); "
            "see docs/writing-a-study.md)"
        )


def describe_bad_entries(bad_entries) -> str:
    """The warning listing every bad annotation entry (file, entry, field, reason) at once."""
    lines = [
        f"warning: {len(bad_entries)} bad annotation entr{'y' if len(bad_entries) == 1 else 'ies'}; each is "
        "recorded as a failed sample and the rest are measured (--strict stops at the first instead):"
    ]
    lines += [f"  {entry.reason}" for entry in bad_entries]
    return "\n".join(lines)
