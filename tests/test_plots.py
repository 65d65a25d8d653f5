"""Bootstrap means and the per-task relative-change figure."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
import xarray as xr

from mapflow.errors import MapflowError
from mapflow.viz.figures import mean_and_ci, plot_rel_change, rel_change_figure

FLOWS = ["video->question", "question->last"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def results(task_sizes: dict[str, int], n_layers: int = 6, seed: int = 0) -> xr.Dataset:
    """Stored-results layout: (sample, flow, layer) with a per-sample `task` coord."""
    rng = np.random.default_rng(seed)
    n = sum(task_sizes.values())
    tasks = [task for task, size in task_sizes.items() for _ in range(size)]
    rel_change = rng.normal(-10, 5, (n, len(FLOWS), n_layers))
    rel_change[::4] = np.nan  # wrongly answered samples were not knocked out
    return xr.Dataset(
        {"rel_change": (("sample", "flow", "layer"), rel_change)},
        coords={
            "sample": [f"s{i}" for i in range(n)],
            "task": ("sample", tasks),
            "flow": FLOWS,
            "layer": np.arange(n_layers),
        },
    )


def test_mean_is_exact_and_nans_are_left_out_per_cell():
    values = np.array([[1.0, 2.0, np.nan], [3.0, np.nan, np.nan], [5.0, 6.0, np.nan]])
    mean, low, high = mean_and_ci(values, n_boot=200)
    np.testing.assert_array_equal(mean[:2], [3.0, 4.0])
    assert np.all(low[:2] <= mean[:2]) and np.all(mean[:2] <= high[:2])
    assert np.isnan([mean[2], low[2], high[2]]).all()


def test_interval_contains_the_mean_and_shrinks_with_more_samples():
    rng = np.random.default_rng(1)
    widths = []
    for n in (20, 2000):
        values = rng.normal(3.0, 2.0, (n, 4, 5))
        mean, low, high = mean_and_ci(values, ci=0.95, n_boot=500, seed=7)
        np.testing.assert_allclose(mean, values.mean(axis=0))
        assert np.all(low < mean) and np.all(mean < high)
        widths.append(np.mean(high - low))
    assert widths[1] < widths[0] / 5  # ~ 1/sqrt(n): 10x fewer


def test_same_seed_gives_the_same_interval():
    values = np.random.default_rng(2).normal(size=(30, 3))
    first, second = mean_and_ci(values, seed=5), mean_and_ci(values, seed=5)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_figure_has_one_panel_per_task_and_one_line_per_flow():
    ds = results({"action_count": 5, "moving_direction": 8})
    fig = rel_change_figure(ds, n_boot=100)
    axes = fig.get_axes()
    assert len(axes) == 2
    for ax, (task, size) in zip(axes, [("action_count", 5), ("moving_direction", 8)]):
        assert task in ax.get_title() and f"n={size}" in ax.get_title()
        assert ax.get_xlabel() == "layer (1-based)"
        flow_lines = [line for line in ax.get_lines() if line.get_label() in FLOWS]
        assert [line.get_label() for line in flow_lines] == FLOWS
        np.testing.assert_array_equal(flow_lines[0].get_xdata(), np.arange(1, 7))
        assert len(ax.collections) == len(FLOWS)  # one confidence band per flow
        assert [text.get_text() for text in ax.get_legend().get_texts()] == FLOWS


def test_plot_writes_a_png(tmp_path):
    ds = results({"action_count": 4, "moving_direction": 4, "egocentric_sequence": 3})
    out = plot_rel_change(ds, tmp_path / "plots" / "rel_change.png", n_boot=100)
    assert out == tmp_path / "plots" / "rel_change.png"
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert matplotlib.image.imread(out).shape[2] in (3, 4)


def test_plot_from_a_result_store(tmp_path):
    from mapflow.results.store import ResultStore, open_dataset

    store = ResultStore.create_or_resume(tmp_path / "run.zarr", {"config": {}})
    ds = results({"action_count": 3, "moving_direction": 2})
    for i in range(ds.sizes["sample"]):
        store.append(ds.isel(sample=[i]))
    fig = rel_change_figure(open_dataset(tmp_path / "run.zarr"), n_boot=50)
    assert len(fig.get_axes()) == 2


def test_all_nan_is_a_clear_error(tmp_path):
    ds = results({"action_count": 3})
    ds["rel_change"][:] = np.nan
    with pytest.raises(MapflowError, match="no finite values"):
        plot_rel_change(ds, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
