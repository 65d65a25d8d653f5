"""Each study declares what `mapflow plot` and the demo suite need next to its `run` (FIGURE / TABLE / DEMO)."""

from __future__ import annotations

import pytest

from mapflow.cli.demo import organism_suite
from mapflow.study.runner import available_studies, load_study
from mapflow.viz import figures, tables


@pytest.mark.parametrize("name", available_studies())
def test_declared_figure_and_table_exist(name):
    study = load_study(name)
    assert not (hasattr(study, "FIGURE") and hasattr(study, "TABLE")), f"{name}: a figure or a table, not both"
    if hasattr(study, "FIGURE"):
        assert callable(getattr(figures, study.FIGURE, None)), f"{name}: no mapflow.viz.figures.{study.FIGURE}"
    if hasattr(study, "TABLE"):
        assert callable(getattr(tables, study.TABLE, None)), f"{name}: no mapflow.viz.tables.{study.TABLE}"


def test_demo_suite_is_the_studies_declarations():
    runs = organism_suite(window=5)
    names = [run.name for run in runs]
    assert len(names) == len(set(names)), "two demo runs write the same store"
    declared = {entry["name"]: (name, entry) for name in available_studies()
                for entry in getattr(load_study(name), "DEMO", ())}
    assert set(names) == set(declared)
    orders = [declared[n][1]["order"] for n in names]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)
    for position, run in enumerate(runs):
        study, entry = declared[run.name]
        assert run.study == study
        assert (run.settings.get("window") == 5) == bool(entry.get("window"))
        assert set(run.depends_on) <= set(names[:position]), f"{run.name} runs before a store it reads"
