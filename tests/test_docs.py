"""The documentation site (mkdocs.yml, docs/) builds offline with --strict, documents every public name, keeps the
README a short front door whose links resolve, and holds everything the long README held before it moved to the
site (issue 26)."""

import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
API_PAGE = "api.html"  # docs/api.md, built

# The `##` / `###` headings of the README as it was before its content moved to the site (git show 6b4437b:README.md):
# each must still be a heading of the README or of a page.
OLD_README_HEADINGS = (
    "Quick start",
    "Running a study",
    "Benchmarks",
    "Accuracy",
    "Results",
    "Reliability",
    "Remote runs: what a lost or dying server does",
    "What a run refuses",
    "Concepts",
    "Supported models",
    "Real tokenizers and real-inputs checkpoints",
    "The paper, study by study",
    "Sample sets per study",
    "Writing a study",
    "From Python",
    "Speed: exact reuse, measured by `mapflow bench`",
    "Beyond the paper: a calibrated screen, frame-pair and head-level knockout",
    "Real scale: 7B shapes, half precision, memory",
    'Half precision: what "the same numbers" means',
    "Memory: packs sized from free memory, out-of-memory retried",
    "Measurements",
    "Scale out: shards, a SLURM array, a Dask cluster",
    "The embedded default: model organisms and a synthetic temporal benchmark",
    "organism-pathway: a planted route, and how well the analysis recovers it",
    "Remote execution on NDIF",
    "One request per sample: the sample plan",
    "Security",
    "Layout",
    "Tests",
)

# Measured numbers and recipes of the old README, one from each section that holds them: they must be on some page.
OLD_README_LANDMARKS = (
    "max |delta p_knockout| naive vs optimized: 9.31e-10",  # Speed: mapflow bench, LLaVA-shaped
    "| information_flow, 3 | video->question | 0.56 | 0.45 | 0.20 | 0.77 |",  # the screen's calibration
    "| llava-next-video-7b, CPU | 4 of 32 (vision 1 of 24) | 2 (444 tokens), 1 sample | bfloat16 | 638.54 / 234.93 |",
    "one worker 26.6 s, two workers 23.6 s end to end",  # Dask shards
    "| object_count | 90.0 | 30.0 | 60.0 | 87.0 | 3.0 | 24.0 | 66.0 |",  # organism-video's targets
    "| effective pathway vs clean / random control at the same budget |",  # organism-pathway's targets
    "--init-from runs/pathway-3 --out runs/pathway-4",  # the pathway organism's recipe
    "| 5 (`--limit 1`)  | 1 | 5 | 1  | 0.67 s | 0.13 s | **1.82×** |",  # NDIF batching
    "Cost: 19–29 ms per request on the organism",  # the server's weight check
    "the run stopped 30.6–33.2 s after the kill",  # a lost server
    "18.5 min in all",  # the test suite
    "| Qwen2.5-VL-7B (`chat_mcqa`) | 642 | 1278 | 2962 |",  # sequence lengths with the published tokenizers
    "**1282** tokens for",  # 7B shapes
    "| `videollama3` | VideoLLaMA3-7B | videollama3, 28, 3584 | L1–15 | L6–20 | L21–28 |",  # Table E presets
)

LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^([ \t]*)(```|~~~).*?^\1\2[ \t]*$", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]


def prose(text: str) -> str:
    """The text without fenced blocks and inline code (a `# comment` or `[x](y)` there is neither heading nor link)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def headings(text: str) -> list[str]:
    return [m.group(2) for m in HEADING.finditer(FENCE.sub("", text))]


def slug(heading: str) -> str:
    """The anchor GitHub (and mkdocs' toc) give a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.lower())
    return re.sub(r"[-\s]+", "-", text).strip("-")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built as `make docs` builds it (--strict: a warning, a broken link or anchor, a missing docstring
    target fails the build)."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stdout}\n{build.stderr}"
    return out


def test_the_site_builds_strict_with_every_page_of_the_nav(site):
    pages = {p.relative_to(DOCS).with_suffix(".html").as_posix() for p in DOCS.rglob("*.md") if "hooks" not in p.parts}
    built = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    assert pages <= built, f"pages not built: {sorted(pages - built)}"


def test_the_site_loads_nothing_from_the_network(site):
    """Offline: no web fonts, no CDN script or stylesheet (links a reader may follow are fine)."""
    fetched = re.compile(r"<(?:script|img|iframe)[^>]*\ssrc=\"(?:https?:)?//|<link[^>]*\shref=\"(?:https?:)?//")
    for page in site.rglob("*.html"):
        hit = fetched.search(page.read_text(encoding="utf-8"))
        assert not hit, f"{page.relative_to(site)} loads from the network: {hit.group(0)}"
    for sheet in site.rglob("*.css"):
        assert not re.search(r"url\((['\"]?)(?:https?:)?//", sheet.read_text(encoding="utf-8")), sheet.name
    assert (site / "search" / "search_index.js").is_file()  # the search index inlined for file:// browsing


def test_every_public_name_has_a_docstring_and_is_on_the_api_page(site):
    import mapflow

    api = (site / API_PAGE).read_text(encoding="utf-8")
    public = [name for name in mapflow.__all__ if name != "__version__"]
    assert public
    for name in public:
        value = getattr(mapflow, name)
        assert (inspect.getdoc(value) or "").strip(), f"mapflow.{name} has no docstring"
        defined_in = importlib.import_module(f"mapflow.{mapflow._API[name]}").__name__
        assert f'id="{defined_in}.{name}"' in api, f"mapflow.{name} ({defined_in}.{name}) is not on docs/api.md"


def test_the_api_page_documents_the_figures_and_tables(site):
    from mapflow.viz import figures, tables

    api = (site / API_PAGE).read_text(encoding="utf-8")
    for module, names in (
        (figures, ("flow_figure", "model_overlay_figure")),
        (tables, ("halves_table", "pathway_table")),
    ):
        for name in names:
            assert f'id="{module.__name__}.{name}"' in api, f"{module.__name__}.{name} is not on docs/api.md"


def test_the_readme_is_a_short_front_door():
    readme = (REPO / "README.md").read_text()
    assert readme.count("\n") < 200
    commands = re.search(r"## Quick start\n\n```bash\n(.*?)```", readme, re.S)
    assert commands and [line.split()[:2] for line in commands.group(1).splitlines()] == [
        ["make", "demo"],
        ["make", "test"],
    ]
    assert "make docs" in readme and re.search(r"!\[[^\]]*\]\(docs/img/[^)]+\.png\)", readme)


def test_every_relative_link_of_the_readme_and_the_pages_resolves():
    broken = []
    for document in documents():
        text = document.read_text()
        for target in LINK.findall(prose(text)):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (document.parent / path).resolve() if path else document
            where = f"{document.relative_to(REPO)}: {target}"
            if not file.exists():
                broken.append(f"{where} (no file {path})")
            elif anchor and file.suffix == ".md" and anchor not in {slug(h) for h in headings(file.read_text())}:
                broken.append(f"{where} (no heading #{anchor})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_link_check_can_fail(tmp_path):
    page = tmp_path / "a.md"
    page.write_text("# A page\n\n[ok](#a-page) [gone](missing.md) `[code](not-a-link.md)`\n```\n[x](y.md)\n```\n")
    links = LINK.findall(prose(page.read_text()))
    assert links == ["#a-page", "missing.md"]
    assert slug("Speed: exact reuse, measured by `mapflow bench`") == "speed-exact-reuse-measured-by-mapflow-bench"


def test_nothing_of_the_old_readme_is_lost():
    texts = {document: document.read_text() for document in documents()}
    all_headings = {h for text in texts.values() for h in headings(text)}
    lost = [h for h in OLD_README_HEADINGS if h not in all_headings]
    assert not lost, f"headings of the old README found on no page: {lost}"
    everything = "\n".join(texts.values())
    missing = [landmark for landmark in OLD_README_LANDMARKS if landmark not in everything]
    assert not missing, f"measurements of the old README found on no page: {missing}"


def test_blocks_that_need_a_checkpoint_or_a_server_keep_their_marker():
    """The old README's blocks marked `# needs:` (a checkpoint, a server, a store) are still marked wherever they are."""
    marked = [
        "convert_pllava_checkpoint(",
        "convert_llava_next_image_checkpoint(",
        "convert_internvl_chat_checkpoint(",
        'xr.open_zarr("runs/flow.zarr")',
        "NDIFBackend(concurrency=2, batch=5)",
        "run_study(study, adapter, samples",
    ]
    blocks = [
        m.group(2)
        for text in (d.read_text() for d in documents())
        for m in re.finditer(r"^([ \t]*)```python\n(.*?)^\1```", text, re.S | re.M)
    ]
    for call in marked:
        holding = [b for b in blocks if call in b]
        assert holding, f"no block holds {call}"
        assert all(b.lstrip().startswith("# needs:") for b in holding), f"a block with {call} lost its # needs:"


def test_the_notebook_page_shows_an_executed_copys_outputs(tmp_path):
    """With outputs (as `make docs` executes it), the page shows printed text, results and figures, never stderr
    (progress bars), and marks the server cell as not run; the stripped copy renders code only."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    spec = importlib.util.spec_from_file_location("notebook_hook", DOCS / "hooks" / "notebook.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    png = "iVBORw0KGgo="  # any base64 text: the page embeds it as it is
    printed = "\n".join(f"row {i}" for i in range(hook.MAX_TEXT_LINES + 5))
    cells = [
        new_markdown_cell("# Title"),
        new_code_cell("print(table)", outputs=[new_output("stream", name="stdout", text=printed)]),
        new_code_cell("run()", outputs=[new_output("stream", name="stderr", text="progress 50%")]),
        new_code_cell("ds", outputs=[new_output("execute_result", data={"text/plain": "<xarray.Dataset>"})]),
        new_code_cell("plt.show()", outputs=[new_output("display_data", data={"image/png": png})]),
        new_code_cell("mf.run(study, remote=True)", metadata={"tags": ["needs-server"]}),
    ]
    path = tmp_path / "nb.ipynb"
    nbformat.write(new_notebook(cells=cells), path)
    page = hook.notebook_markdown(path, notebook=nbformat.read(path, as_version=4))
    assert "row 0" in page and f"row {hook.MAX_TEXT_LINES - 1}" in page and "(5 more lines)" in page
    assert f"row {hook.MAX_TEXT_LINES}\n" not in page
    assert "progress 50%" not in page
    assert "<xarray.Dataset>" in page and f"data:image/png;base64,{png}" in page
    assert "needs an NDIF server" in page
    nbformat.write(new_notebook(cells=[new_markdown_cell("# Title"), new_code_cell("print(table)")]), path)
    bare = hook.notebook_markdown(path)  # the stored (stripped) copy, not run
    assert "```python\nprint(table)\n```" in bare and "row 0" not in bare
