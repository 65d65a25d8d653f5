"""head_sweep cuts one head of one layer unless asked otherwise, and its figure says so; screen stores are marked in
every figure and refused where exact numbers are required (issue 22, part 7a/7b)."""

import importlib
import re

import numpy as np
import pytest
import torch
import xarray as xr
from conftest import study_context
from test_screen_studies import hooked_probs

from mapflow.errors import KnockoutConfigError, MapflowError
from mapflow.knockout.flows import Flow, Window
from mapflow.results.method import SCREEN_MARK
from mapflow.viz import figures, tables

head_sweep = importlib.import_module("mapflow.studies.head_sweep")


def test_each_cell_cuts_one_head_of_one_layer_by_default(sdpa_adapter, sample, frames):
    # the run's knockout window is 3 (as `--window 3` would make it): head_sweep does not take it
    ctx = study_context(
        sdpa_adapter,
        sample,
        frames,
        samples="all",
        window=Window("center", 3),
        options={"heads": "1"},
        flows=("video->last",),
    )
    ds = head_sweep.run(ctx)
    cut = torch.from_numpy(Flow.parse("video->last").block_matrix(ctx.layout))
    pred = int(ds["pred_base"])
    for layer in range(sdpa_adapter.num_layers):
        alone = hooked_probs(sdpa_adapter, ctx.prepared, cut, [layer], heads=[1])
        cell = float(ds["p_knockout"].sel(flow="video->last", head=1, layer=layer))
        assert abs(cell - float(alone[pred])) <= 1e-5, layer
    assert figures.head_window_size(ds) == 1
    wider = head_sweep.run(
        study_context(
            sdpa_adapter, sample, frames, samples="all", options={"heads": "1", "window": "3"}, flows=("video->last",)
        )
    )
    assert figures.head_window_size(wider) == 3
    assert not np.allclose(wider["p_knockout"].values, ds["p_knockout"].values)


def test_the_global_window_is_refused_and_the_option_checked(sdpa_adapter):
    from mapflow.analysis.context import StudyConfig

    with pytest.raises(KnockoutConfigError, match="one head in one layer.*--option window=K.*not --window"):
        head_sweep.check_options(sdpa_adapter, StudyConfig(), window_given=True)
    with pytest.raises(KnockoutConfigError, match=r"window=9: give 1\.\.4 layers"):
        head_sweep.check_options(sdpa_adapter, StudyConfig(options={"window": "9"}), window_given=False)
    head_sweep.check_options(sdpa_adapter, StudyConfig(options={"window": "3"}), window_given=False)


def _head_store(window: int, screen: bool = False) -> xr.Dataset:
    values = np.arange(2 * 3 * 4, dtype=float).reshape(1, 2, 3, 4) - 10  # (sample, flow, layer, head)
    ds = xr.Dataset(
        {"rel_change": (("sample", "flow", "layer", "head"), values)},
        coords={
            "flow": ["video->last", "question->last"],
            "layer": np.arange(3),
            "head": np.arange(4),
            "window": window,
        },
    )
    if screen:
        ds.attrs["provenance"] = {"config": {"method": "screen", "plan": "screen"}}
    return ds


def test_the_head_figure_says_window_and_per_layer_heads():
    one = figures.head_figure(_head_store(1))
    title = one.axes[0].get_title()
    assert "one head of one layer" in title and "window 1" in title and "head indices are per layer" in title
    wide = figures.head_figure(_head_store(3))
    assert "window 3" in wide.axes[0].get_title() and "not aligned across layers" in wide.axes[0].get_title()
    assert wide.axes[0].get_ylabel() == "centre layer (1-based)"
    assert SCREEN_MARK not in one.get_suptitle()
    assert SCREEN_MARK in figures.head_figure(_head_store(1, screen=True)).get_suptitle()


def test_screen_stores_are_marked_in_plots_and_refused_for_exact_numbers(
    tiny_model_dir, tiny_benchmark, tmp_path, capsys
):
    from mapflow.cli import main
    from mapflow.results.store import open_dataset

    common = [
        "--model",
        str(tiny_model_dir),
        "--data",
        str(tiny_benchmark),
        "--limit",
        "1",
        "--samples",
        "all",
        "--window",
        "3",
        "--no-progress",
    ]
    screen, exact = tmp_path / "screen.zarr", tmp_path / "exact.zarr"
    assert main(["run", "information_flow", *common, "--plan", "screen", "--out", str(screen)]) == 0
    assert main(["run", "information_flow", *common, "--out", str(exact)]) == 0
    capsys.readouterr()
    assert main(["plot", str(screen), "--png", str(tmp_path / "screen.png")]) == 0
    assert SCREEN_MARK in capsys.readouterr().out and (tmp_path / "screen.png").is_file()
    screened, measured = open_dataset(screen), open_dataset(exact)
    assert SCREEN_MARK in figures.flow_figure(screened).get_suptitle()
    assert (
        SCREEN_MARK
        in figures.model_overlay_figure({"a": measured, "b": screened}, flow="video->question").get_suptitle()
    )
    assert SCREEN_MARK not in figures.flow_figure(measured).get_suptitle()
    with pytest.raises(MapflowError, match=r"interval table \(Table E\(b\)\).*screen estimates"):
        tables.interval_table(screened)
    tables.interval_table(measured)
    # Table E's layer rule: a screen store is refused before any sample runs
    assert (
        main(
            [
                "run",
                "effective_pathway",
                *common[:-3],
                "--no-progress",
                "--out",
                str(tmp_path / "p.zarr"),
                "--option",
                f"from={screen}",
                "--option",
                "interval=1",
                "--option",
                "task=all",
            ]
        )
        != 0
    )
    assert re.search(r"--option from= \(Table E's layer rule\).*screen estimates", capsys.readouterr().err)
    assert not (tmp_path / "p.zarr").exists()
