"""The list of differences (paper / released code / mapflow default / other behaviour) is true and kept true: its
documentation page (docs/paper/differences.md) shows exactly the rendered list, every setting it names exists, and
every default it states is the code's."""

import argparse
import importlib
import inspect
import re
from pathlib import Path

import pytest

from mapflow.differences import DIFFERENCES, default, render_markdown

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "paper" / "differences.md"  # the site's "Paper, released code, mapflow" page
SETTINGS = [d.setting for d in DIFFERENCES if d.setting is not None]


def _ids(setting):
    return f"{setting.kind}:{setting.key}"


def test_the_docs_page_shows_the_rendered_list():
    page = PAGE.read_text()
    block = re.search(r"<!-- differences:start -->\n(.*?)<!-- differences:end -->", page, re.S)
    assert block, f"{PAGE.relative_to(REPO)} has no <!-- differences:start --> ... <!-- differences:end --> block"
    assert block.group(1) == render_markdown(), (
        f"{PAGE.relative_to(REPO)}'s differences table is stale: "
        "paste `python -m mapflow.differences` between its markers"
    )


def _run_parser() -> argparse.ArgumentParser:
    from mapflow.cli.commands import add_run_arguments

    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    return parser


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.kind == "flag"], ids=_ids)
def test_flags_exist_with_the_stated_default(setting):
    parser = _run_parser()
    actions = {a.dest: a for a in parser._actions}
    assert setting.key in actions, f"mapflow run has no flag for {setting.key}"
    assert actions[setting.key].default == setting.default
    flag = setting.other.split()[0]
    assert flag in actions[setting.key].option_strings
    # the other behaviour parses
    parser.parse_args(["information_flow", "--out", "x.zarr", *setting.other.split()])


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.kind == "keyword"], ids=_ids)
def test_keywords_exist_with_the_stated_default(setting):
    module, _, name = setting.target.rpartition(".")
    function = getattr(importlib.import_module(module), name)
    parameter = inspect.signature(function).parameters.get(setting.key)
    assert parameter is not None, f"{setting.target} has no keyword {setting.key}"
    assert parameter.default == setting.default


def _study_sources(setting) -> dict[str, str]:
    if setting.studies == ("*",):  # read by the analysis core for every study (the study API's modules)
        core = ("context", "clean", "knockouts", "datasets")
        return {
            "mapflow.analysis (core)": "\n".join((REPO / f"mapflow/analysis/{name}.py").read_text() for name in core)
        }
    return {name: (REPO / "studies" / f"{name}.py").read_text() for name in setting.studies}


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.kind == "option"], ids=_ids)
def test_options_are_read_with_the_listed_default(setting):
    for name, source in _study_sources(setting).items():
        reads = re.findall(rf'option\("{setting.key}"(?:,\s*((?:[^()]|\([^()]*\))*))?\)', source)
        assert reads, f"{name} never reads --option {setting.key}"
        for given_default in reads:
            if setting.default is None:
                assert given_default == "", f"{name} reads --option {setting.key} with a default, the list says none"
            else:  # the default comes from the list itself (directly or through a constant), never a literal
                given = given_default.strip()
                from_list = f'default("{setting.key}")'
                through_constant = re.fullmatch(r"[A-Z_]+", given) and re.search(
                    rf"^{given} = (?:\w+\()?{re.escape(from_list)}", source, re.M
                )
                assert given == from_list or through_constant, (
                    f"{name} reads --option {setting.key} with {given_default}, not the list's default"
                )


def test_default_is_one_value_per_setting():
    for setting in SETTINGS:
        assert default(setting.key) == setting.default
    with pytest.raises(KeyError):
        default("no_such_setting")
