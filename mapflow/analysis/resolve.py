"""From a user's choices to a ready run: the study, model, samples, configuration and provenance.

One function, `prepare_run`, resolves them for every entry point (``mapflow run``, `mapflow.run`, the demo,
``organism evaluate``), so a study gets the same prompt template, defaults and provenance wherever it is started.
"""

from __future__ import annotations

import inspect
import traceback
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from .. import differences
from ..errors import DataError, MapflowError
from ..inputs.prompts import McqaTemplate, Template, resolve_template
from ..knockout.flows import Window
from . import run_checks
from .context import StudyConfig
from .declaration import declaration_of
from .option_checks import check_study_options

DEFAULT_BENCHMARK = "tvbench"


class BenchmarkSamples(list):
    """Samples as a benchmark loader returns them, plus where they came from (for provenance)."""

    def __init__(self, samples, *, benchmark: str, root: Path, tasks=None, limit=None, seed: int = 42, bad_entries=()):
        super().__init__(samples)
        self.benchmark, self.root, self.tasks, self.limit, self.seed = benchmark, Path(root), tasks, limit, seed
        self.bad_entries = list(bad_entries)  # annotation entries that cannot be read: recorded as failed samples


def load_benchmark(
    name: str = DEFAULT_BENCHMARK,
    root=None,
    *,
    limit: int | None = None,
    tasks=None,
    seed: int = 42,
    strict: bool = False,
) -> BenchmarkSamples:
    """Benchmark ``name`` from ``root`` in its published layout (default: the embedded benchmark); ``limit`` samples
    per task, chosen with ``seed``. A bad annotation entry is kept aside in ``.bad_entries`` (a run records it as a
    failed sample and measures the rest); ``strict`` raises at the first instead."""
    from contextlib import nullcontext

    from ..data.benchmarks import get_benchmark
    from ..data.loading import collecting_bad_entries
    from ..embedded import default_data_dir
    from ..inputs.checks import check_limit, user_path

    check_limit(limit)
    benchmark = get_benchmark(name)
    root = user_path(str(root)) if root is not None else default_data_dir()
    tasks = list(tasks) if tasks else None
    with nullcontext([]) if strict else collecting_bad_entries() as bad_entries:
        samples = benchmark.loader(root, tasks=tasks, limit=limit, seed=seed)
    return BenchmarkSamples(
        samples, benchmark=benchmark.name, root=root, tasks=tasks, limit=limit, seed=seed, bad_entries=bad_entries
    )


class FunctionStudy:
    """A plain ``run(ctx)`` function as a study. ``__name__`` is the module it ships with on a remote run and
    ``__wrapped__`` lets `inspect` read the function's own source (the remote pre-flight checks it)."""

    def __init__(self, function):
        self.run = self.__wrapped__ = function
        self.__name__ = function.__module__
        self.__doc__ = function.__doc__
        self.study_name = function.__name__
        # what `@mapflow.study` declared on the function stays on it (`mapflow.analysis.declaration.declaration_of`)


def as_study(study) -> tuple[object, str]:
    """(study object with ``run``, its name): a study name, a ``.py`` path, a module or a function taking ctx."""
    from .catalog import load_study

    if isinstance(study, (str, Path)):
        text = str(study)
        return (_load_study_file(text) if text.endswith(".py") else load_study(text)), Path(text).stem
    if isinstance(study, ModuleType):
        if not callable(getattr(study, "run", None)):
            raise MapflowError(f"study module {study.__name__} defines no run(ctx) function")
        return study, study.__name__.rpartition(".")[2]
    if inspect.isfunction(study) or inspect.ismethod(study):
        return FunctionStudy(study), study.__name__
    raise MapflowError(f"a study is a name, a .py path, a module or a function run(ctx); got {type(study).__name__}")


def _load_study_file(path: str):
    """A study ``.py`` file, its own errors (syntax, a failed import, anything its top level raises) as one line
    naming the file and the line."""
    from .catalog import load_study

    try:
        return load_study(path)
    except MapflowError:
        raise
    except SyntaxError as err:
        raise MapflowError(f"study file {path}, line {err.lineno}: {err.msg} (a syntax error)") from None
    except Exception as err:
        line = next(
            (frame.lineno for frame in reversed(traceback.extract_tb(err.__traceback__)) if frame.filename == path),
            None,
        )
        where = f", line {line}" if line else ""
        what = "cannot import" if isinstance(err, ImportError) else f"raised {type(err).__name__} while loading"
        raise MapflowError(f"study file {path}{where}: {what}: {err}") from None


def choose_template(requested: str | None, adapter, benchmark: str) -> Template:
    """The user's template, else the checkpoint's own, else the benchmark's."""
    try:
        return resolve_template(requested, adapter.prompt_template, benchmark)
    except KeyError as err:
        raise MapflowError(err.args[0]) from None


def resolve_config(config: StudyConfig, adapter, samples) -> StudyConfig:
    """Fill in a hand-built config's template (None: the checkpoint's own, as ``mapflow run`` picks it) and warn when
    a multiple-choice template other than the one the checkpoint names is used: the model was trained or tuned on its
    own, so its answers may be wrong for that reason alone."""
    from dataclasses import replace

    template = choose_template(config.prompt_template, adapter, getattr(samples, "benchmark", DEFAULT_BENCHMARK))
    own = adapter.prompt_template
    if own is not None and isinstance(template, McqaTemplate) and template.name != own.name:
        warnings.warn(
            f"prompt template '{template.name}' on {adapter.path}, whose own template is '{own.name}' "
            "(leave the template out to use its own)",
            stacklevel=3,
        )
    return replace(config, prompt_template=template.name)


@dataclass
class PreparedRun:
    study: object
    study_name: str
    adapter: object
    samples: list
    config: StudyConfig
    provenance: dict


def prepare_run(
    study,
    model=None,
    data=None,
    *,
    benchmark: str | None = None,
    template: str | None = None,
    window: int | Window | None = None,
    window_style: str = "center",
    layers: str | None = None,
    limit: int | None = None,
    tasks=None,
    samples: str | None = None,
    options: dict | None = None,
    frames: int | None = None,
    frame_rule: str | None = None,
    flows=None,
    gt_token: str = differences.default("gt_token"),
    non_option_includes_prefix: bool = True,
    plan: str = "auto",
    seed: int = 42,
    attn: str = "sdpa",
    dtype: str = differences.default("dtype"),
    device: str = "cpu",
    device_map=None,
    threads: int | None = None,
    strict: bool = False,
    heads=None,
) -> PreparedRun:
    """Resolve a run exactly as ``mapflow run`` does (its options have the same names and defaults).

    ``model``: None (the embedded organism), a checkpoint directory or a loaded adapter. ``data``: None (the embedded
    benchmark), a benchmark root, or samples from `load_benchmark` (then ``limit``/``tasks`` belong there).
    """
    import torch

    from ..data.benchmarks import get_benchmark
    from ..inputs import checks as inputs
    from ..results.provenance import run_provenance

    study, study_name = as_study(study)
    declaration_of(study)  # the study's declaration checked (its errors name the study and the field)
    # what needs neither the data nor the model, checked before either loads (and before any store exists)
    options = _as_options(options)
    check_study_options(study, study_name, options)
    inputs.check_frames(frames)
    inputs.check_limit(limit)
    inputs.check_threads(threads)
    run_checks.check_window_setting(window, window_style)
    inputs.check_device(device, device_map)
    if threads:
        torch.set_num_threads(threads)
    if isinstance(data, BenchmarkSamples):
        if limit is not None or tasks:
            raise MapflowError(
                "limit and tasks choose samples while loading: pass them to load_benchmark, not with "
                "samples already loaded"
            )
        if benchmark is not None and benchmark != data.benchmark:
            raise MapflowError(f"benchmark '{benchmark}' given with samples loaded from '{data.benchmark}'")
        loaded = data
    elif data is None or isinstance(data, (str, Path)):
        loaded = load_benchmark(
            benchmark or DEFAULT_BENCHMARK, data, limit=limit, tasks=tasks, seed=seed, strict=strict
        )
    else:
        raise MapflowError(
            f"data is a benchmark root or samples from mapflow.load_benchmark, not {type(data).__name__}"
        )
    # the data first: a bad annotation file fails before a large checkpoint loads
    adapter = _as_adapter(model, attn_implementation=attn, dtype=dtype, device=device, device_map=device_map)
    # the settings the model runs with, not the requested ones ("auto" resolves per device; a loaded model has its own)
    attn, dtype = adapter.attn_implementation, str(adapter.hf_model.dtype).removeprefix("torch.")
    spec = get_benchmark(loaded.benchmark)
    chosen = choose_template(template, adapter, spec.name)
    _check_pairing(chosen, loaded)
    if isinstance(window, Window):
        knockout_window = window
    elif layers:
        knockout_window = Window.parse_ranges(layers)
    else:  # 9: the paper's; only a size the user gave is held to the model's layer count
        knockout_window = Window(style=window_style, size=9 if window is None else window)
    config = StudyConfig(
        window=knockout_window,
        samples=samples or declaration_of(study).samples,
        options=options,
        seed=seed,
        num_frames=spec.num_frames if frames is None else frames,
        frame_rule=frame_rule or adapter.default_frame_rule or spec.frame_rule,
        prompt_template=chosen.name,
        gt_token=gt_token,
        non_option_includes_prefix=non_option_includes_prefix,
        flows=tuple(flows) if flows else None,
        plan=plan,
        heads=None if heads is None else tuple(heads),
    )
    run_checks.check_run_options(
        study,
        adapter,
        loaded,
        config,
        chosen,
        window_given=isinstance(window, Window) or window is not None or bool(layers),
    )
    model_dir, data_root = Path(adapter.path), loaded.root
    run_config = {
        "study": study_name,
        **config.to_dict(),
        "benchmark": spec.name,
        "tasks": loaded.tasks,
        "limit": loaded.limit,
        "seed": seed,
        "model": str(model_dir.resolve()),
        "data": str(data_root.resolve()),
        "attn_implementation": attn,
        "dtype": dtype,
    }
    annotation_files = sorted([*data_root.rglob("*.json"), *data_root.rglob("*.parquet")])
    provenance = run_provenance(
        study=study_name,
        model_dir=model_dir,
        data_root=data_root,
        annotation_files=annotation_files,
        seed=seed,
        config=run_config,
        runtime={"device": device, "device_map": device_map, "threads": torch.get_num_threads()},
    )
    return PreparedRun(study, study_name, adapter, loaded, config, provenance)


def _as_options(options) -> dict[str, str]:
    """``--option`` settings as the study reads them (strings); a mapping is required."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise MapflowError(
            f"options is a mapping of study settings, e.g. {{'lens': 'released_code'}}; got {type(options).__name__}"
        )
    return {str(k): str(v) for k, v in options.items()}


def _as_adapter(model, **load_options):
    from ..embedded import default_model_dir
    from ..models import VideoLLMAdapter, load_adapter

    if isinstance(model, VideoLLMAdapter):
        return model
    if model is None or isinstance(model, (str, Path)):
        return load_adapter(Path(model) if model is not None else default_model_dir(), **load_options)
    raise MapflowError(
        f"model is a checkpoint directory or a model from mapflow.load_model, not {type(model).__name__}"
    )


def _check_pairing(template: Template, samples: list) -> None:
    """A multiple-choice prompt needs samples with options: say so once, before any sample runs."""
    if isinstance(template, McqaTemplate) and samples:
        try:
            samples[0].require_multiple_choice()
        except DataError as err:
            raise MapflowError(
                f"the prompt template '{template.name}' asks a multiple-choice question, but the data "
                f"cannot: {err} (choose an open-ended template, or multiple-choice data)"
            ) from None
