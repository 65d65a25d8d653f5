"""prune-eval end to end on the shipped pathway organism (8 layers, 2 samples): the store's dims and coords, FLOPs
falling as more is pruned, the unpruned method scored exactly as mapflow's clean run, the figure, table and the
report's section; and the FastV-at-the-plan's-FLOPs interpolation on a synthetic store."""

import json
import os

import numpy as np
import pytest
import xarray as xr

import mapflow as mf
from mapflow.cli.commands import main
from mapflow.embedded import organism_dir
from mapflow.pruning.evaluate import build_methods, matched_ratio
from mapflow.pruning.plan import PrunePlan
from mapflow.pruning.spec import PruneSpec
from mapflow.pruning.summary import fastv_at_plan_flops, method_table, pick, verdict

THREADS = int(os.environ.get("MAPFLOW_TEST_THREADS", "1"))
TASK = "action_antonym"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    out = tmp_path_factory.mktemp("prune")
    plan_path = out / "plan.json"
    assert main(["prune-plan", "--drop-video-after", "4", "--out", str(plan_path)]) == 0
    plan = json.loads(plan_path.read_text())
    plan["spec"]["frame_local_layers"] = [3, 4]  # the organism's cross-frame route ends at layer 2 (planted)
    plan_path.write_text(json.dumps(plan))
    store = out / "prune_eval.zarr"
    args = ["prune-eval", "--plan", str(plan_path), "--model", str(organism_dir("pathway")), "--limit", "2"]
    args += ["--tasks", TASK, "--fastv-layers", "2", "--fastv-ratios", "0.5", "1.0", "--out", str(store)]
    assert main([*args, "--threads", str(THREADS), "--no-progress"]) == 0
    return out, store, mf.open_dataset(store).load()


def test_store_dims_coords_and_provenance(evaluated):
    out, store, ds = evaluated
    names = ["unpruned", "pathway", "pathway_drop_only", "fastv_K2_R50", "fastv_K2_R100"]
    assert dict(ds.sizes) == {"sample": 2, "pruning": len(names)}
    assert [str(m) for m in ds["pruning"].values] == names
    assert {str(t) for t in ds["task"].values} == {TASK}
    assert [int(k) for k in ds["K"].values] == [-1, 4, 4, 2, 2]
    assert np.allclose(ds["R"].values, [0, 1, 1, 0.5, 1])
    for name in ("pred", "correct", "agrees", "p_answer", "flops", "wall_s", "tokens_after"):
        assert ds[name].dims == ("sample", "pruning"), name
    assert pick(ds["agrees"], "unpruned").all()
    # the dim is selectable by label (a dim named `method` is not: .sel(method=...) is xarray's own keyword)
    assert ds["flops"].sel(pruning="pathway").dims == ("sample",)
    assert (ds["flops"].sel(pruning="pathway").values == ds["flops"].values[:, 1]).all()
    prune = ds.attrs["provenance"]["config"]["prune"]
    assert prune["plan"]["spec"]["drop_after"] == 4 and prune["plan"]["rule"] == "explicit"
    assert set(prune["methods"]) == set(names)
    assert (store.with_suffix(".png")).is_file() and (store.with_suffix(".csv")).is_file()


def test_flops_and_tokens_fall_with_pruning(evaluated):
    _, _, ds = evaluated
    flops = {str(m): ds["flops"].values[:, i] for i, m in enumerate(ds["pruning"].values)}
    assert (flops["pathway_drop_only"] < flops["unpruned"]).all()
    assert (flops["pathway"] < flops["pathway_drop_only"]).all()  # frame-local attention computes less
    assert (flops["fastv_K2_R100"] < flops["fastv_K2_R50"]).all()
    assert (flops["fastv_K2_R50"] < flops["unpruned"]).all()
    assert (flops["fastv_K2_R100"] < flops["pathway_drop_only"]).all()  # the same drop, two layers earlier
    video, seq = ds["video_tokens"].values, ds["seq_len"].values
    assert (pick(ds["tokens_after"], "unpruned").values == seq).all()
    assert (pick(ds["tokens_after"], "pathway").values == seq - video).all()
    assert (pick(ds["tokens_after"], "fastv_K2_R100").values == seq - video).all()


def test_unpruned_method_scores_as_the_clean_run(evaluated):
    _, _, ds = evaluated

    def clean(ctx):
        run = ctx.clean()
        return xr.Dataset({"pred_base": ((), np.int64(run.pred)), "correct": ((), run.correct)})

    benchmark = mf.load_benchmark("tvbench", limit=2, tasks=[TASK])
    reference = mf.run(clean, str(organism_dir("pathway")), benchmark, threads=THREADS, progress=False)
    assert [str(s) for s in reference["sample"].values] == [str(s) for s in ds["sample"].values]
    assert (pick(ds["pred"], "unpruned").values == reference["pred_base"].values).all()
    assert (pick(ds["correct"], "unpruned").values == reference["correct"].values).all()


def test_figure_table_and_report_section(evaluated, tmp_path):
    from mapflow.viz.pruning import prune_figure, prune_table
    from mapflow.viz.report import build_report

    _, store, ds = evaluated
    fig = prune_figure(ds)
    assert len(fig.axes) == 2
    table = prune_table(ds)
    assert list(table.index) == [str(m) for m in ds["pruning"].values]
    assert table.loc["unpruned", "FLOPs % of unpruned"] == pytest.approx(100.0)
    report = tmp_path / "report"
    report.mkdir()
    os.symlink(store, report / store.name)
    html = build_report(report).read_text()
    assert "From the map to speed: pruning organism-pathway" in html


def synthetic_store(points):
    """methods: unpruned, pathway, fastv K=1 at (flops, accuracy) points; one sample per accuracy percent."""
    names = ["unpruned", "pathway"] + [f"fastv_{i}" for i in range(len(points) - 2)]
    n = 100
    correct = np.stack([np.arange(n) < acc for _, acc in points], axis=1)
    flops = np.tile(np.asarray([f for f, _ in points], dtype=np.int64), (n, 1))
    return xr.Dataset(
        {
            "correct": (("sample", "pruning"), correct),
            "agrees": (("sample", "pruning"), correct),
            "flops": (("sample", "pruning"), flops),
            "wall_s": (("sample", "pruning"), np.ones_like(flops, dtype=float)),
        },
        coords={
            "sample": [f"s{i}" for i in range(n)],
            "task": ("sample", ["t"] * n),
            "pruning": names,
            "kind": ("pruning", ["unpruned", "pathway"] + ["fastv"] * (len(points) - 2)),
            "K": ("pruning", [-1, 4] + [1] * (len(points) - 2)),
            "R": ("pruning", [0.0, 1.0] + [0.5] * (len(points) - 2)),
            "label": ("pruning", names),
        },
    )


def test_fastv_interpolated_at_the_plan_flops_and_verdict():
    ds = synthetic_store([(100, 90), (60, 90), (80, 88), (40, 40)])
    # FastV K=1 passes (40, 40) and (80, 88): at the plan's 60 FLOPs, 40 + (88 - 40) / 2
    assert fastv_at_plan_flops(ds) == {1: pytest.approx(64.0)}
    v = verdict(ds)
    assert v["reaches_clean"] and v["lowest_flops_within_tolerance"]
    assert method_table(ds).loc["pathway", "FLOPs % of unpruned"] == pytest.approx(60.0)
    worse = verdict(synthetic_store([(100, 90), (60, 85), (80, 90), (40, 89.5)]))
    assert not worse["reaches_clean"] and worse["cheapest_within_tolerance"] == "fastv_1"


def test_default_sweep_brackets_the_plan():
    plan = PrunePlan(PruneSpec(drop_after=4), "explicit", None, None)
    methods = build_methods(plan, 8)
    ks = sorted({m.spec.drop_after for m in methods if m.kind == "fastv"})
    assert ks == [2, 3, 4]
    assert "fastv_K2_R60" in [m.name for m in methods]  # matched: (2+1) + 0.4 * 5 = 4 + 1 video-token-layers
    assert matched_ratio(2, 4, 8) == pytest.approx(0.6)
    assert not any(m.spec.drop_after == 4 and m.spec.ratio == 1.0 for m in methods if m.kind == "fastv")
    with pytest.raises(mf.MapflowError, match="layers 0..7"):
        build_methods(PrunePlan(PruneSpec(drop_after=9), "explicit", None, None), 8)
