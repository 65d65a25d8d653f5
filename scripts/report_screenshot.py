"""Screenshot of a mapflow report for the docs: the top of the page and one figure with its tooltip showing.

    .venv/bin/python scripts/report_screenshot.py /tmp/demo/report.html docs/img/report.png

Needs Playwright (the test extra) and a Chromium (``make browser``; ``--chromium PATH`` or $MAPFLOW_CHROMIUM to
choose another). The page is 1100 px wide; the shot is written as an 8-bit palette PNG to stay small.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="report.html (e.g. the demo's)")
    parser.add_argument("out", type=Path, nargs="?", default=Path("docs/img/report.png"))
    parser.add_argument("--figure", default="3_information_flow", help="stem (start) of the figure to hover")
    parser.add_argument("--chromium", default=os.environ.get("MAPFLOW_CHROMIUM") or shutil.which("chromium"))
    args = parser.parse_args()
    if not args.chromium:
        raise SystemExit("no chromium found: make browser, or pass --chromium PATH")
    from PIL import Image
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium)
        page = browser.new_page(viewport={"width": 1100, "height": 820})
        page.goto(args.report.resolve().as_uri())
        figure = page.locator(f"figure.mf-figure:has(img[alt^='{args.figure}'])").first
        image = figure.locator("img")
        image.scroll_into_view_if_needed()
        page.evaluate("window.scrollBy(0, -70)")  # the section's heading above the figure
        box = image.bounding_box()
        task = figure.locator("select[data-key=task]")
        if task.count():  # one task's panel highlighted, its numbers listed
            task.select_option(index=2)
        page.mouse.move(box["x"] + box["width"] * 0.47, box["y"] + box["height"] * 0.45)
        shot = page.screenshot()
        browser.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.open(io.BytesIO(shot)).convert("RGB").quantize(colors=128).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
