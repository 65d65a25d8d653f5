"""The report in a real browser: headless Chromium (Debian's ``chromium``, driven by Playwright through
``executable_path``) opens a report built from a cheap run on the embedded organisms, finds every section and image,
hovers heatmap cells and curve points and checks the numbers shown against the result stores, and checks that the
hovered cell's colour in the PNG under the mouse is the colormap's colour of the value shown (so labels that point at
the wrong cell fail). Tampered reports show the check failing.

Skipped when chromium or playwright is missing, except under CI (the ``CI`` environment variable), where it fails.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.xdist_group("report_browser")  # one report and one browser launch for the whole module
RUNS = ("information_flow-pathway", "head_sweep-video")  # one curve figure per task, one heatmap; ~30 s together


def _browser_or_skip():
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright, reason = None, "playwright is not installed (pip install -e '.[test]')"
    chromium = os.environ.get("MAPFLOW_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if reason is None and chromium is None:
        reason = "no chromium executable (make browser installs Debian's chromium)"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"browser test under CI: {reason}")
        pytest.skip(reason)
    return sync_playwright, chromium


@pytest.fixture(scope="module")
def browser():
    sync_playwright, chromium = _browser_or_skip()
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, browser):
    from mapflow.cli.demo import run_suite

    out = tmp_path_factory.mktemp("report")
    run_suite(out, limit=1, only=list(RUNS))
    return out


def open_page(browser, html_path: Path, width: int = 1280):
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(html_path.as_uri())
    page.errors = errors
    return page


def figure_named(page, stem_start: str):
    figures = page.locator("figure.mf-figure")
    for i in range(figures.count()):
        if (figures.nth(i).locator("img").get_attribute("alt") or "").startswith(stem_start):
            return figures.nth(i)
    raise AssertionError(f"no figure whose stem starts with {stem_start}")


def figure_png(figure) -> np.ndarray:
    """The figure's image as drawn, decoded from its data: URI (RGB, uint8)."""
    from PIL import Image

    src = figure.locator("img").get_attribute("src")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))


def hover(page, figure, fx: float, fy: float) -> dict[str, str]:
    """Move the mouse to the fractions (fx, fy) of the figure's image; the tooltip's rows (key -> text shown), with
    the full-precision value under ``"value_data"``; {} when no tooltip shows."""
    figure.locator("img").scroll_into_view_if_needed()
    box = figure.locator("img").bounding_box()  # in the viewport, where the mouse moves
    page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
    if not page.locator("#mf-tip").is_visible():
        return {}
    shown = page.eval_on_selector_all(
        "#mf-tip tr", "rows => rows.map(r => [r.dataset.key, r.querySelector('td').textContent, r.dataset.value])"
    )
    values = {key: text for key, text, _ in shown}
    values["value_data"] = next(data for key, _, data in shown if key == "value")
    return values


def half_unit_of_last_digit(text: str) -> float:
    """Half a unit in the last digit of a number as the page writes it (6 significant digits, or 5 in e-notation):
    the rounding the display adds."""
    mantissa, _, exponent = text.partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (-decimals + int(exponent or 0))


def colormap_rgb(cmap: str, vmin: float, vmax: float, value: float) -> np.ndarray:
    import matplotlib
    from matplotlib.colors import Normalize

    return 255 * np.asarray(matplotlib.colormaps[cmap](Normalize(vmin, vmax)(value))[:3])


# the colour under the mouse and the colormap's colour of the value shown: matplotlib draws the cell from its 256-entry
# lookup table in 8 bits, so they agree to the rounding of one channel (1 level) plus one of resampling at the centre
COLOUR_TOLERANCE = 2.0


def heatmap_mismatches(page, figure, store: Path) -> list[str]:
    """Hover the centre of every cell of the head heatmap and list what disagrees: the value shown vs the store's mean
    at the flow/layer/head shown, n vs the store's finite samples, the value inside its band, and the PNG's colour
    under the mouse vs the colormap colour of the value shown."""
    from mapflow.results.store import open_dataset

    ds = open_dataset(store)
    mapping = json.loads(figure.locator("script.mf-data").text_content())
    png = figure_png(figure)
    height, width = png.shape[:2]
    problems, cells = [], 0
    for panel in mapping["panels"]:
        for item in (it for it in panel["items"] if it["kind"] == "cells"):
            (x0, y0), (x1, y1) = item["corners"]
            n_rows, n_cols = len(item["rows"]), len(item["cols"])
            for row in range(n_rows):
                for col in range(n_cols):
                    fx, fy = x0 + (col + 0.5) / n_cols * (x1 - x0), y0 + (row + 0.5) / n_rows * (y1 - y0)
                    shown = hover(page, figure, fx, fy)
                    where = f"cell at ({fx:.3f}, {fy:.3f})"
                    if not shown:
                        problems.append(f"{where}: no tooltip")
                        continue
                    cells += 1
                    value_text = shown["value"]
                    value = float(shown["value_data"])
                    if abs(float(value_text) - value) > half_unit_of_last_digit(value_text):
                        problems.append(f"{where}: text {value_text} is not the value {value}")
                    samples = ds["rel_change"].sel(
                        flow=shown["flow"], layer=int(shown["layer"]) - 1, head=int(shown["head"])
                    )
                    finite = samples.values[np.isfinite(samples.values)].astype(np.float64)
                    expected = finite.mean()
                    label = f"flow {shown['flow']} layer {shown['layer']} head {shown['head']}"
                    if abs(float(value_text) - expected) > half_unit_of_last_digit(value_text):
                        problems.append(f"{where}: shows {value_text} for {label}, the store's mean is {expected}")
                    if int(shown["n"]) != finite.size:
                        problems.append(f"{where}: n {shown['n']} for {label}, the store has {finite.size}")
                    low, high = (float(v) for v in re.findall(r"[-\d.e+]+", shown["band"])[:2])
                    if (
                        not low - half_unit_of_last_digit(str(low))
                        <= value
                        <= high + half_unit_of_last_digit(str(high))
                    ):
                        problems.append(f"{where}: value {value} outside its band [{low}, {high}]")
                    drawn = png[int(fy * height), int(fx * width)].astype(float)
                    want = colormap_rgb(item["cmap"], item["vmin"], item["vmax"], value)
                    if np.abs(drawn - want).max() > COLOUR_TOLERANCE:
                        problems.append(
                            f"{where}: drawn colour {drawn.astype(int).tolist()} is not the colour of {value} "
                            f"({want.round().astype(int).tolist()})"
                        )
    if cells == 0:
        problems.append("no heatmap cell was hovered")
    return problems


def curve_mismatches(page, figure, store: Path) -> list[str]:
    """Hover every point of the flow figure's first two panels (two tasks; every panel costs ~3 s of hovers) and
    compare the value and n shown with the store's task/flow/layer."""
    from mapflow.results.store import open_dataset
    from mapflow.results.tasks import select_task

    ds = open_dataset(store)
    mapping = json.loads(figure.locator("script.mf-data").text_content())
    problems, points = [], 0
    for panel in mapping["panels"][:2]:
        for item in panel["items"]:
            for fx_fy in item["px"]:
                if fx_fy is None:
                    continue
                shown = hover(page, figure, *fx_fy)
                if not shown:
                    problems.append(f"point {fx_fy}: no tooltip")
                    continue
                points += 1
                samples = select_task(ds, shown["task"])["rel_change"].sel(
                    flow=shown["flow"], layer=int(shown["layer"]) - 1
                )
                finite = samples.values[np.isfinite(samples.values)].astype(np.float64)
                value_text = shown["value"]
                label = f"{shown['task']} {shown['flow']} layer {shown['layer']}"
                if abs(float(value_text) - finite.mean()) > half_unit_of_last_digit(value_text):
                    problems.append(f"{label}: shows {value_text}, the store's mean is {finite.mean()}")
                if int(shown["n"]) != finite.size:
                    problems.append(f"{label}: n {shown['n']}, the store has {finite.size}")
    if points == 0:
        problems.append("no curve point was hovered")
    return problems


def test_every_section_and_image_is_there_and_the_page_fits(browser, report_dir):
    page = open_page(browser, report_dir / "report.html", width=900)
    toc = page.locator("ul.toc a").count()
    assert toc >= 2 and page.locator("section").count() == toc
    assert page.locator("section h2").count() == toc
    images = page.locator("figure img")
    assert images.count() >= 2
    for i in range(images.count()):
        assert images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0"), f"image {i} did not load"
    assert page.locator("figure.mf-figure script.mf-data").count() == images.count()  # every figure has its numbers
    # nothing overflows the page: tables scroll inside their own box, images shrink to the page
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    assert page.errors == []
    page.close()


def test_hovered_heatmap_cells_show_the_stores_numbers_at_their_place(browser, report_dir):
    page = open_page(browser, report_dir / "report.html")
    figure = figure_named(page, "heads_")
    assert heatmap_mismatches(page, figure, report_dir / "head_sweep-video.zarr") == []
    assert page.errors == []
    page.close()


def test_hovered_curve_points_show_the_stores_numbers(browser, report_dir):
    page = open_page(browser, report_dir / "report.html")
    figure = figure_named(page, "3_information_flow")
    assert curve_mismatches(page, figure, report_dir / "information_flow-pathway.zarr") == []
    page.close()


def test_a_task_selector_highlights_its_panel_and_filters_the_numbers(browser, report_dir):
    page = open_page(browser, report_dir / "report.html")
    figure = figure_named(page, "3_information_flow")
    mapping = json.loads(figure.locator("script.mf-data").text_content())
    tasks = [p["fields"]["task"] for p in mapping["panels"]]
    chosen = tasks[1]
    figure.locator("select[data-key=task]").select_option(chosen)
    figure.locator("details.mf-numbers summary").click()
    task_column = figure.locator("details.mf-numbers thead th").all_text_contents().index("task")
    shown = figure.locator("details.mf-numbers tbody tr").evaluate_all(
        f"rows => rows.map(r => r.children[{task_column}].textContent)"
    )
    expected = sum(len(it["x"]) for p in mapping["panels"] if p["fields"]["task"] == chosen for it in p["items"])
    assert shown == [chosen] * expected
    assert figure.locator("svg rect.mf-dim").count() == len(tasks) - 1  # the other tasks' panels are dimmed
    page.close()


def _tampered(report: Path, out: Path, stem_start: str, change) -> Path:
    """A copy of the report whose figure ``stem_start`` has its embedded numbers changed by ``change(item)``."""
    page = report.read_text()
    pattern = re.compile(
        r"(alt='" + re.escape(stem_start) + r"[^']*'></div><script type='application/json' "
        r"class='mf-data'>)(.*?)(</script>)",
        re.S,
    )
    found = pattern.search(page)
    assert found, f"no embedded numbers for {stem_start}"
    mapping = json.loads(found.group(2))
    for panel in mapping["panels"]:
        for item in panel["items"]:
            change(item)
    out.write_text(page[: found.start(2)] + json.dumps(mapping) + page[found.end(2) :])
    return out


def _reverse_row_labels(item):
    item["rows"] = item["rows"][::-1]  # each cell's tooltip names another layer


def _shift_values(item):
    values = item["values"]
    item["values"] = values[1:] + values[:1]  # every cell shows its neighbour's value


def _move_grid(item):
    (x0, y0), (x1, y1) = item["corners"]
    dx = (x1 - x0) / len(item["cols"])
    item["corners"] = [[x0 + dx, y0], [x1 + dx, y1]]  # the grid is placed one column to the right of the image's


@pytest.mark.parametrize("change", [_reverse_row_labels, _shift_values, _move_grid], ids=lambda f: f.__name__[1:])
def test_the_check_fails_on_a_report_with_wrong_labels(browser, report_dir, tmp_path, change):
    tampered = _tampered(report_dir / "report.html", tmp_path / "report.html", "heads_", change)
    page = open_page(browser, tampered)
    problems = heatmap_mismatches(page, figure_named(page, "heads_"), report_dir / "head_sweep-video.zarr")
    assert problems, f"{change.__name__} went unnoticed"
    page.close()
