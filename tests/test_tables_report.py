"""Paper tables from hand-made stores, and the demo suite's report end to end on the shipped organisms."""

import numpy as np
import pytest
import xarray as xr

from mapflow.viz import tables


def test_halves_table_counts_by_hand():
    pred = np.array([[[5, 6, 6]], [[7, 7, 7]], [[5, 5, 6]], [[9, 9, 9]]])  # (sample, flow, layers)
    ds = xr.Dataset(
        {
            "pred_knockout": (("sample", "flow", "layers"), pred),
            "answer_token": (("sample",), [5, 7, 5, 8]),
            "correct": (("sample",), [True, True, True, False]),
            "knocked_out": (("sample",), [True] * 4),
        },
        coords={
            "flow": ["cross_frame"],
            "layers": ["first_half", "second_half", "all"],
            "task": ("sample", ["a", "a", "b", "b"]),
        },
    )
    table = tables.halves_table(ds)
    assert table.loc["all", "clean_acc"] == 75.0
    assert table.loc["all", "first_half_acc"] == 75.0  # samples 0, 1, 2 still right
    assert table.loc["all", "second_half_acc"] == 50.0
    assert table.loc["all", "second_half_drop_pts"] == 25.0
    assert table.loc["all", "all_drop_among_correct"] == pytest.approx(66.7)  # 2 of the 3 correct ones flip
    assert table.loc["b", "n"] == 2 and table.loc["b", "clean_acc"] == 50.0


def test_keyword_frequency_normalizes_as_the_paper():
    words = np.array(
        [[["cup", "up"], ["cup", ""]], [["", "up"], ["up", "up"]], [["cup", "cup"], ["", ""]]], dtype=object
    )  # (layer, sample, video_token)
    kinds = np.where(words == "cup", "spatial", np.where(words == "up", "temporal", "")).astype(object)
    ds = xr.Dataset(
        {
            "keyword": (("layer", "sample", "video_token"), words),
            "keyword_kind": (("layer", "sample", "video_token"), kinds),
        }
    )
    spatial = tables.keyword_frequency(ds, "spatial", interval=2, min_hits=1, samples="all")
    assert spatial.loc["cup", "hits"] == 4
    assert spatial.loc["cup", "1-2"] == pytest.approx(0.5) and spatial.loc["cup", "3-3"] == pytest.approx(0.5)
    temporal = tables.keyword_frequency(ds, "temporal", interval=2, min_hits=1, samples="all")
    assert temporal.loc["up", "1-2"] == pytest.approx(1.0)
    assert tables.keyword_frequency(ds, "temporal", interval=2, min_hits=5, samples="all").empty


def test_pathway_table_reports_accuracy_and_kept_share():
    ds = xr.Dataset(
        {
            "correct_after": (("sample", "condition"), [[True, True], [True, False]]),
            "edges_kept": (("sample", "condition"), [[100, 40], [200, 60]]),
            "edges_total": (("sample",), [100, 200]),
        },
        coords={"condition": ["clean", "effective"], "task": ("sample", ["a", "a"])},
    )
    table = tables.pathway_table(ds)
    assert table.loc["all", "effective_acc"] == 50.0
    assert table.loc["all", "effective_kept_%"] == pytest.approx(100 * 50 / 150, abs=0.05)


@pytest.mark.slow
def test_demo_suite_writes_every_store_figure_and_the_report(tmp_path):
    from mapflow.cli.demo import organism_suite, run_suite

    manifest = run_suite(tmp_path, limit=1)
    names = [r["name"] for r in manifest["runs"]]
    beyond = ("calibrate-", "prune_eval-")  # the demo's runs beyond the suite's studies
    assert [n for n in names if not n.startswith(beyond)] == [r.name for r in organism_suite()]
    assert "calibrate-information_flow" in names and "prune_eval-pathway" in names
    html = (tmp_path / "report.html").read_text()
    sections = ("Frame pairs, organism-video", "Heads, organism-video", "Calibration of the screen")
    for section in (*sections, "From the map to speed"):
        assert section in html, section
    for paper in (
        "Fig. 2",
        "Fig. 3",
        "Fig. 4",
        "Fig. 5",
        "Fig. 6",
        "Fig. 7",
        "Fig. 8",
        "Fig. V",
        "Fig. W",
        "Table 2",
        "Table 3",
        "Figs. AJ-AL",
        "Fig. P",
        "Fig. Q",
        "Fig. R",
        "Fig. S",
    ):
        assert paper in html, paper
    assert html.count("data:image/png;base64,") >= 15
    # the route figures are drawn on the planted organism, and the report says what was planted
    assert html.count("Planted in organism-pathway by its training masks") >= 5
    for stem in ("fig2_cross_frame", "figV_progressive_organism-video", "fig8_answer_probability_organism-pathway"):
        assert (tmp_path / "figures" / f"{stem}.png").stat().st_size > 1000
        assert (tmp_path / "figures" / f"{stem}.pdf").is_file()
    assert (tmp_path / "tables" / "table3_pathways_organism-pathway.csv").is_file()


@pytest.mark.slow
def test_demo_suite_beyond_the_paper_runs_and_report(tmp_path):
    """The frame-pair and head studies and the screen's calibration in the demo, with their report sections."""
    import json

    from mapflow.cli.demo import run_suite

    manifest = run_suite(tmp_path, limit=1, only=["frame_pairs-video", "head_sweep-video", "calibrate"])
    assert [r["name"] for r in manifest["runs"]] == [
        "frame_pairs-video",
        "head_sweep-video",
        "calibrate-information_flow",
    ]
    html = (tmp_path / "report.html").read_text()
    for section in ("Frame pairs, organism-video", "Heads, organism-video", "Calibration of the screen"):
        assert section in html, section
    for stem in ("frame_pairs_organism-video", "heads_organism-video"):
        assert (tmp_path / "figures" / f"{stem}.png").stat().st_size > 1000
    report = json.loads((tmp_path / "calibration-information_flow.json").read_text())
    assert report["samples"] >= 1 and "video->last" in report["flows"]


def test_report_sets_planted_routes_next_to_the_findings(tmp_path):
    import json

    from mapflow.viz.report import Store, planted_note

    model = tmp_path / "organism-x"
    model.mkdir()
    (model / "mapflow.json").write_text(
        json.dumps({"planted_routes": {"cross_frame": [[0, 3]], "video->question": [[3, 5]], "video->last": []}})
    )
    store = Store("s", "information_flow", "organism-x", False, None, {"model": {"path": str(model)}})
    note = planted_note(store)
    assert "cross_frame open in layers 1-3" in note and "video->question open in layers 4-5" in note
    assert "video->last closed in every layer" in note
    (model / "mapflow.json").write_text("{}")
    assert planted_note(store) is None


def test_long_figure_titles_wrap_inside_their_axes_and_short_ones_stay(tmp_path):
    """Fig. 4's keyword list titles ran off the figure; a title wider than its axes is wrapped, one that fits is not."""
    from mapflow.viz.figures import new_figure, save_figure

    fig, axes = new_figure(1, 2, width=4)
    long_title = "temporal keywords (12: " + ", ".join(f"keyword{i}" for i in range(12)) + ")"
    axes[0][0].set_title("short title")
    axes[0][1].set_title(long_title)
    save_figure(fig, tmp_path / "titles", formats=("png",))
    renderer = fig.canvas.get_renderer()
    assert axes[0][0].get_title() == "short title"
    wrapped = axes[0][1].get_title()
    assert "\n" in wrapped and wrapped.replace("\n", " ") == long_title  # nothing dropped, only line breaks
    for ax in axes[0]:
        title, box = ax.title.get_window_extent(renderer), ax.get_window_extent(renderer)
        assert title.width <= box.width and 0 <= title.x0 and title.x1 <= fig.bbox.width, ax.get_title()


def test_report_figure_map_places_heatmap_cells_where_the_png_draws_them(tmp_path):
    """The recorded grid corners of a heatmap are where its colours are in the saved PNG (no browser needed)."""
    import io

    import matplotlib
    from PIL import Image

    from mapflow.viz import figures, report_explore
    from mapflow.viz.figure_data import record_cells

    values = np.arange(12, dtype=float).reshape(3, 4) - 6
    fig, axes = figures.new_figure(1, 1)
    ax = axes[0][0]
    figures._heatmap(ax, values, limit=6, xlabel="x", ylabel="y", title="t", xticks=range(4), yticks=range(3))
    record_cells(
        ax,
        values,
        rows=range(3),
        cols=range(4),
        row_name="r",
        col_name="c",
        value_name="v",
        vmin=-6,
        vmax=6,
        cmap="RdBu",
    )
    (png,) = figures.save_figure(fig, tmp_path / "heat", formats=("png",))
    mapping = report_explore.figure_map(fig, png.read_bytes())
    image = np.asarray(Image.open(io.BytesIO(png.read_bytes())).convert("RGB")).astype(float)
    item = mapping["panels"][0]["items"][0]
    (x0, y0), (x1, y1) = item["corners"]
    colormap = matplotlib.colormaps["RdBu"]
    for row in range(3):
        for col in range(4):
            fx, fy = x0 + (col + 0.5) / 4 * (x1 - x0), y0 + (row + 0.5) / 3 * (y1 - y0)
            drawn = image[int(fy * mapping["height"]), int(fx * mapping["width"])]
            want = 255 * np.asarray(colormap((values[row, col] + 6) / 12)[:3])
            assert np.abs(drawn - want).max() <= 2, (row, col)  # 8-bit lookup table and resampling rounding
