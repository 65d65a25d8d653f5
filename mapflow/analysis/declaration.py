"""A study's declaration: what the shells need next to its ``run(ctx)``, as one typed, checked object.

``@mapflow.study(...)`` on a ``run(ctx)`` function declares it; the shipped studies (``studies/*.py``), a user's study
file and a function passed to `mapflow.run` are declared alike::

    import mapflow as mf
    from mapflow.viz import figures

    @mf.study(flows=("cross_frame",), figure=figures.flow_figure, samples="correct", screenable=True, options={})
    def run(ctx):
        return ctx.sweep(["cross_frame"])

The decorator checks every field when the study loads (a wrong type, an unknown field, a figure that is not a
function...) and raises a `MapflowError` naming the study and the field; it returns ``run`` itself, so the function
still runs as written. Readers get a study's declaration from `declaration_of` (defaults for a study that declares
nothing), never from module globals.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType

from ..errors import MapflowError
from ..knockout.cells import SAMPLE_MODES
from .options import StudyOption

ATTRIBUTE = "__mapflow_study__"  # where the decorator keeps the declaration on the run function
REPORT_STORES = ("closed", "open_ended", "all")
# the module globals of the first study protocol: a study that still defines them is told what replaces each (not
# FLOWS or check_options: common names a study file may hold or import for its own use, e.g. another study's FLOWS)
LEGACY_GLOBALS = {
    "FIGURE": "figure",
    "TABLE": "table",
    "DEMO": "demo",
    "REPORT": "report",
    "SCREENABLE": "screenable",
    "DEFAULT_SAMPLES": "samples",
    "OPTIONS": "options",
}


@dataclass(frozen=True)
class DemoRun:
    """One run of the study in the demo suite (`mapflow.cli.demo.organism_suite`)."""

    order: int  # its place in the suite
    name: str  # the store's name
    variant: str = "video"  # which organism
    window: bool = False  # use the suite's window
    open_ended: bool = False  # appendix C.1's sentence completion (`mapflow.cli.demo.OPEN_ENDED`)
    options: Mapping[str, str] | None = None  # --option settings
    limit_scale: float = 1.0  # share of the suite's per-task limit
    depends_on: tuple[str, ...] = ()  # stores of other runs this run reads (given as --option from=...)


@dataclass(frozen=True)
class ReportSection:
    """One section of `mapflow report` (`mapflow.viz.report.study_sections`)."""

    order: int  # its place in the page
    section: Callable  # ``section(writer, stores)``
    stores: str = "closed"  # which of the study's stores: "closed" (multiple choice), "open_ended" or "all"


@dataclass(frozen=True)
class StudyDeclaration:
    """What a study declares next to its ``run(ctx)``; every field has a default, so a bare ``run`` is a study."""

    flows: tuple[str, ...] = ()  # the flows it knocks out (``--flows`` is checked against the spans they name)
    figure: Callable | None = None  # ``figure(ds) -> Figure`` that `mapflow plot` draws (e.g. viz.figures.flow_figure)
    table: Callable | None = None  # ``table(ds) -> DataFrame`` that `mapflow plot` writes instead of a figure
    samples: str = "correct"  # the default ``--samples`` (the paper's filter for the study)
    screenable: bool = False  # its cells are knockouts read at the last position: ``--plan screen`` may estimate them
    report: tuple[ReportSection, ...] = ()  # its sections of `mapflow report`
    demo: tuple[DemoRun, ...] = ()  # its runs in `mapflow demo`
    options: Mapping[str, StudyOption] | None = None  # its ``--option`` settings; None: undeclared (not checked)
    check: Callable | None = None  # ``check(adapter, config, *, window_given)``: options against the model
    name: str = field(default="", compare=False)  # for messages: the file or function it was declared on


FIELDS = tuple(f.name for f in fields(StudyDeclaration) if f.name != "name")
DEFAULT = StudyDeclaration()


def study(run: Callable | None = None, /, **declared):
    """Declare a study on its ``run(ctx)`` function: ``@study(flows=..., figure=fn, table=fn, samples="correct",
    screenable=True, report=(...), demo=(...), options={...}, check=fn)``, or bare ``@study``. Returns ``run``."""

    def declare(function: Callable) -> Callable:
        if not callable(function):
            raise MapflowError(f"@mapflow.study decorates a run(ctx) function, not {type(function).__name__}")
        where = _where(function)
        setattr(function, ATTRIBUTE, make_declaration(where, **declared))
        return function

    return declare if run is None else declare(run)


def make_declaration(where: str, **declared) -> StudyDeclaration:
    """A checked `StudyDeclaration` from the decorator's keywords; ``where`` names the study in every error."""
    for name in declared:
        if name not in FIELDS:
            near = difflib.get_close_matches(name, FIELDS, n=1, cutoff=0.6)
            hint = f"did you mean '{near[0]}'? " if near else ""
            raise MapflowError(
                f"study {where}: @mapflow.study has no field '{name}'; {hint}its fields: {', '.join(FIELDS)}"
            )
    values = dict(declared)
    fail = _failer(where)
    if "flows" in values:
        values["flows"] = _flows(values["flows"], fail)
    for name in ("figure", "table", "check"):
        if values.get(name) is not None and not callable(values[name]):
            value = values[name]
            fail(
                name,
                f"a function, got {type(value).__name__} {value!r}"
                + (
                    " (pass the function itself, e.g. mapflow.viz.figures.flow_figure)"
                    if isinstance(value, str)
                    else ""
                ),
            )
    if values.get("figure") is not None and values.get("table") is not None:
        fail("table", "a figure or a table, not both (`mapflow plot` draws one)")
    if "samples" in values and values["samples"] not in SAMPLE_MODES:
        fail("samples", f"one of {', '.join(SAMPLE_MODES)}, got {values['samples']!r}")
    if "screenable" in values and not isinstance(values["screenable"], bool):
        fail("screenable", f"True or False, got {values['screenable']!r}")
    if "options" in values:
        values["options"] = _options(values["options"], fail)
    if "report" in values:
        values["report"] = tuple(
            _entry(ReportSection, entry, "report", fail) for entry in _sequence(values["report"], "report", fail)
        )
        for entry in values["report"]:
            if not callable(entry.section):
                fail("report", f"entries whose section is a function (writer, stores), got {entry.section!r}")
            if entry.stores not in REPORT_STORES:
                fail("report", f"entries whose stores is one of {', '.join(REPORT_STORES)}, got {entry.stores!r}")
    if "demo" in values:
        values["demo"] = tuple(_demo(entry, fail) for entry in _sequence(values["demo"], "demo", fail))
    return StudyDeclaration(**values, name=where)


def declaration_of(study) -> StudyDeclaration:
    """The declaration of ``study`` (a study module, a `FunctionStudy`, or a run function): what ``@study`` gave its
    ``run``, else the defaults. A module that still defines the old globals (``FIGURE``, ``DEFAULT_SAMPLES``,
    ``OPTIONS``...) and no declaration is refused with what replaces each, so none of them is silently ignored."""
    run = study if inspect.isfunction(study) else getattr(study, "run", None)
    declared = getattr(run, ATTRIBUTE, None) if run is not None else None
    if declared is not None:
        return declared
    # the old globals on a module, or the old attributes on a function (``fn.DEFAULT_SAMPLES``, ``fn.OPTIONS``)
    legacy = [
        name
        for name in LEGACY_GLOBALS
        if name in getattr(study, "__dict__", {}) or name in getattr(run, "__dict__", {})
    ]
    if legacy:
        where = getattr(study, "__file__", None) or getattr(study, "__name__", repr(study))
        replacement = ", ".join(f"{name} -> {LEGACY_GLOBALS[name]}=" for name in legacy)
        raise MapflowError(
            f"study {where} defines {', '.join(legacy)}, which mapflow no longer reads; "
            f"declare them on run with @mapflow.study({replacement}...)"
        )
    return DEFAULT


# --- checks -----------------------------------------------------------------------------------------------------------


def _where(function) -> str:
    try:
        path = inspect.getsourcefile(function)
    except TypeError:
        path = None
    name = getattr(function, "__qualname__", getattr(function, "__name__", "run"))
    return f"{path} ({name})" if path else f"{getattr(function, '__module__', '?')}.{name}"


def _failer(where: str):
    def fail(name: str, expected: str):
        raise MapflowError(f"study {where}: @mapflow.study field '{name}' must be {expected}")

    return fail


def _sequence(value, name: str, fail) -> tuple:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (tuple, list)):
        fail(name, f"a tuple of entries, got {type(value).__name__}")
    return tuple(value)


def _flows(value, fail) -> tuple[str, ...]:
    from ..knockout.flows import Flow

    flows = _sequence(value, "flows", fail)
    for flow in flows:
        if not isinstance(flow, str):
            fail("flows", f"flow names (e.g. 'video->last'), got {flow!r}")
        try:
            Flow.parse(flow)
        except MapflowError as err:
            fail("flows", f"flows mapflow can parse: {flow!r}: {err}")
    return flows


def _options(value, fail):
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(o, StudyOption) for k, o in value.items()
    ):
        fail("options", "a mapping of option names to mapflow.analysis.options.StudyOption")
    return MappingProxyType(dict(value))


def _entry(kind, entry, name: str, fail):
    if isinstance(entry, kind):
        return entry
    if not isinstance(entry, Mapping):
        fail(name, f"{kind.__name__} entries or dicts, got {type(entry).__name__}")
    known = [f.name for f in fields(kind)]
    unknown = [key for key in entry if key not in known]
    if unknown:
        fail(name, f"entries with keys among {', '.join(known)}; unknown: {', '.join(map(str, unknown))}")
    try:
        return kind(**entry)
    except TypeError as err:  # a required key missing
        fail(name, f"complete entries ({err})")


def _demo(entry, fail) -> DemoRun:
    run = _entry(DemoRun, entry, "demo", fail)
    if not isinstance(run.order, int) or not isinstance(run.name, str) or not run.name:
        fail("demo", f"entries with an int order and a store name, got {entry!r}")
    if run.options is not None and not isinstance(run.options, Mapping):
        fail("demo", f"entries whose options is a mapping, got {run.options!r}")
    return DemoRun(**{**run.__dict__, "depends_on": tuple(run.depends_on)})
