"""A study's declaration (`@mapflow.study`, `mapflow.analysis.declaration`): what `mapflow plot`, the report and the demo
suite take from a study, checked when the study loads, the same for a shipped study, a study file and a function."""

from __future__ import annotations

import textwrap

import pytest

import mapflow as mf
from mapflow.analysis.declaration import DEFAULT, DemoRun, ReportSection, StudyDeclaration, declaration_of
from mapflow.analysis.options import StudyOption
from mapflow.analysis.runner import available_studies, load_study
from mapflow.cli.demo import organism_suite
from mapflow.errors import MapflowError
from mapflow.viz import figures


@pytest.mark.parametrize("name", available_studies())
def test_every_shipped_study_is_declared(name):
    declared = declaration_of(load_study(name))
    assert isinstance(declared, StudyDeclaration) and declared is not DEFAULT, f"{name}: no @mapflow.study on run"
    assert declared.options is not None, f"{name}: its options are declared (an empty mapping when it has none)"
    assert all(isinstance(entry, ReportSection) for entry in declared.report)
    assert all(isinstance(entry, DemoRun) for entry in declared.demo)


def test_demo_suite_is_the_studies_declarations():
    runs = organism_suite(window=5)
    names = [run.name for run in runs]
    assert len(names) == len(set(names)), "two demo runs write the same store"
    declared = {
        entry.name: (name, entry) for name in available_studies() for entry in declaration_of(load_study(name)).demo
    }
    assert set(names) == set(declared)
    orders = [declared[n][1].order for n in names]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)
    for position, run in enumerate(runs):
        study, entry = declared[run.name]
        assert run.study == study
        assert (run.settings.get("window") == 5) == entry.window
        assert set(run.depends_on) <= set(names[:position]), f"{run.name} runs before a store it reads"


def test_the_twin_flow_studies_differ_only_in_their_flows_and_places():
    """`into_true_option` and `question_options_to_last` are one parametrised study (`studies/_flow_sweep.py`)."""
    from mapflow.knockout.flows import PAPER_FLOWS

    into, question = (declaration_of(load_study(name)) for name in ("into_true_option", "question_options_to_last"))
    assert into.flows == tuple(PAPER_FLOWS["into_true_option"])
    assert question.flows == tuple(PAPER_FLOWS["question_options_to_last"])
    for declared in (into, question):
        assert declared.figure is figures.flow_figure and declared.screenable and dict(declared.options) == {}
    assert [(d.order, d.name) for d in into.demo + question.demo] == [
        (50, "into_true_option-pathway"),
        (40, "question_options_to_last-pathway"),
    ]
    assert [r.order for r in into.report + question.report] == [70, 60]


def test_a_plain_run_function_is_a_study_with_the_defaults():
    def run(ctx):
        return None

    assert declaration_of(run) == DEFAULT and DEFAULT.samples == "correct" and DEFAULT.options is None


def test_the_decorator_returns_the_function_and_declares_it():
    def sweep_once(ctx):
        return ctx

    declared_run = mf.study(
        flows=("video->last",),
        samples="all",
        figure=figures.flow_figure,
        options={"mode": StudyOption("what is cut", "a", ("a", "b"))},
        demo=({"order": 1, "name": "x"},),
    )(sweep_once)
    assert declared_run is sweep_once and declared_run("ctx") == "ctx"
    declared = declaration_of(sweep_once)
    assert declared.flows == ("video->last",) and declared.samples == "all" and declared.figure is figures.flow_figure
    assert declared.demo == (DemoRun(order=1, name="x"),) and list(declared.options) == ["mode"]
    assert mf.study(sweep_once) is sweep_once  # bare form


@pytest.mark.parametrize(
    "fields,message",
    [
        (
            {"figure": "flow_figure"},
            "field 'figure' must be a function, got str 'flow_figure' (pass the function itself",
        ),
        ({"figure": figures.flow_figure, "table": figures.flow_figure}, "field 'table' must be a figure or a table"),
        ({"samples": "every"}, "field 'samples' must be one of"),
        ({"screenable": "yes"}, "field 'screenable' must be True or False"),
        ({"flows": "video->last"}, "field 'flows' must be a tuple of entries, got str"),
        ({"flows": ("video",)}, "field 'flows' must be flows mapflow can parse: 'video': cannot read flow"),
        ({"options": {"mode": "a"}}, "field 'options' must be a mapping of option names to"),
        ({"report": ({"order": 1, "section": "report_section"},)}, "field 'report' must be entries whose section is a"),
        ({"report": ({"order": 1, "section": print, "stores": "some"},)}, "entries whose stores is one of"),
        ({"demo": ({"order": 1, "name": "x", "windw": True},)}, "unknown: windw"),
        ({"demo": ({"name": "x"},)}, "field 'demo' must be complete entries"),
        ({"figures": figures.flow_figure}, "no field 'figures'; did you mean 'figure'?"),
    ],
)
def test_a_bad_declaration_is_refused_naming_the_study_and_the_field(fields, message):
    def run(ctx):
        return None

    with pytest.raises(MapflowError, match="study .*test_study_declarations.py \\(.*run\\)") as caught:
        mf.study(**fields)(run)
    assert message in str(caught.value)


def test_a_study_file_is_declared_like_a_shipped_study_and_checked_when_it_loads(tmp_path):
    good = tmp_path / "halves.py"
    good.write_text(
        textwrap.dedent("""
        import mapflow as mf
        from mapflow.viz import tables

        @mf.study(flows=("cross_frame",), table=tables.halves_table, samples="all")
        def run(ctx):
            return ctx.knockout(["cross_frame"], {"early": (0, 1)})
    """)
    )
    declared = declaration_of(load_study(str(good)))
    assert declared.samples == "all" and declared.table.__name__ == "halves_table"
    bad = tmp_path / "bad.py"
    bad.write_text("import mapflow as mf\n\n@mf.study(figure='flow_figure')\ndef run(ctx):\n    return None\n")
    with pytest.raises(MapflowError, match=r"bad.py.*field 'figure' must be a function"):
        mf.run(str(bad), limit=1)


def test_the_old_module_globals_are_refused_with_their_replacement(tmp_path):
    old = tmp_path / "old_style.py"
    old.write_text("DEFAULT_SAMPLES = 'all'\nFIGURE = 'flow_figure'\n\ndef run(ctx):\n    return None\n")
    with pytest.raises(
        MapflowError,
        match=r"old_style.py defines FIGURE, DEFAULT_SAMPLES.*"
        r"@mapflow.study\(FIGURE -> figure=, DEFAULT_SAMPLES -> samples=",
    ):
        load_study(str(old))


def test_a_function_study_carries_its_declaration_into_the_run(tmp_path):
    """The declared ``samples`` of a function passed to `mapflow.run` is the run's default ``--samples``."""
    from mapflow.analysis.resolve import prepare_run

    @mf.study(samples="wrong", options={})
    def only_wrong(ctx):
        return None

    prepared = prepare_run(only_wrong, limit=1, tasks=["object_count"])
    assert prepared.config.samples == "wrong" and prepared.provenance["config"]["samples"] == "wrong"
    with pytest.raises(MapflowError, match="study only_wrong has no option 'mode'"):
        prepare_run(only_wrong, limit=1, options={"mode": "x"})
