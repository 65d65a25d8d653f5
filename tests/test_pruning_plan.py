"""The pruning plan from a map (`mapflow.pruning.plan`): the layer after which no measured route reads the video,
on synthetic knockout stores whose routes end at known layers."""

import json

import numpy as np
import pytest
import xarray as xr

from mapflow.errors import MapflowError
from mapflow.pruning.plan import PrunePlan, prune_plan

NUM_LAYERS = 8


def sweep(changes: dict[str, list[float]], *, window: int = 1, tasks=("a", "b"), samples_per_task=2, model="m"):
    """A knockout sweep store: ``changes[flow][layer]`` is every sample's rel_change at that window centre."""
    half = window // 2
    blocked = [
        ",".join(str(i) for i in range(max(0, c - half), min(NUM_LAYERS, c + half + 1))) for c in range(NUM_LAYERS)
    ]
    flows = list(changes)
    values = np.asarray([changes[f] for f in flows], dtype=float)
    n = len(tasks) * samples_per_task
    return xr.Dataset(
        {
            "rel_change": (("sample", "flow", "layer"), np.broadcast_to(values, (n, *values.shape)).copy()),
            "knocked_out": (("sample",), np.ones(n, dtype=bool)),
        },
        coords={
            "sample": [f"s{i}" for i in range(n)],
            "task": ("sample", [t for t in tasks for _ in range(samples_per_task)]),
            "flow": flows,
            "layer": np.arange(NUM_LAYERS),
            "blocked_layers": ("layer", blocked),
        },
        attrs={"provenance": {"study": "information_flow", "model": {"name": model, "weights_hash": model}}},
    )


def route(until: int, drop: float = -30.0, start: int = 0) -> list[float]:
    """A flow whose knockout lowers the answer by ``drop`` % in layers start..until and does nothing elsewhere."""
    return [drop if start <= layer <= until else 0.0 for layer in range(NUM_LAYERS)]


@pytest.mark.parametrize("until", [2, 5])
def test_route_ending_at_known_layer_gives_that_layer(until):
    ds = sweep({"video->question": route(until, start=1), "video->last": route(-1), "question->last": route(7)})
    plan = prune_plan(ds)
    assert plan.spec.drop_after == until
    assert plan.spec.drop == "video"
    assert plan.read_layers["video->question"] == tuple(range(1, until + 1))
    assert "question->last" not in plan.read_layers  # its source is not the video


def test_latest_video_route_sets_the_layer_and_stores_combine():
    early = sweep({"video->question": route(3)})
    late = sweep({"cross_frame": route(5)})
    assert prune_plan(early).drop_after == 3
    assert prune_plan([early, late]).drop_after == 5  # a layer read in any store is read


def test_threshold_respected():
    changes = route(6, drop=-4.0)
    changes[:3] = [-20.0, -20.0, -20.0]  # a strong route in layers 0-2, a weak one (-4 %) until layer 6
    ds = sweep({"video->question": changes})
    assert prune_plan(ds, threshold=-5.0).drop_after == 2
    assert prune_plan(ds, threshold=-3.0).drop_after == 6
    assert prune_plan(ds, threshold=-3.0).threshold == -3.0


def test_one_task_route_is_not_averaged_away():
    ds = sweep({"video->question": route(2)})
    values = ds["rel_change"].values
    values[ds["task"].values == "b", 0, 6] = -8.0  # only task b reads the video in layer 6; the mean is -4 %
    assert prune_plan(ds).drop_after == 6


def test_unmeasured_samples_are_ignored():
    ds = sweep({"video->question": route(2)})
    ds["rel_change"].values[0, 0, 5] = np.nan  # a sample the --samples mode skipped
    ds["knocked_out"].values[1] = False
    ds["rel_change"].values[1, 0, 6] = -90.0  # not knocked out: its cells are not evidence
    assert prune_plan(ds).drop_after == 2


def test_window_rules():
    # window 3: harmful windows centred on 2..5 (layers 1-6), harmless ones centred on 0, 1 (layers 0-2) and 6, 7
    # (layers 5-7): layers 3-4 are read
    ds = sweep({"video->question": route(5, start=2)}, window=3)
    assert prune_plan(ds).drop_after == 4
    assert prune_plan(ds, rule="window_centre").drop_after == 5
    assert prune_plan(ds, rule="window_end").drop_after == 6


def test_redundant_route_counts_its_whole_window():
    # harmful only where layers 3 and 4 are knocked out together (windows centred 3, 4): either layer suffices, so
    # each is cleared by a harmless window, yet dropping the video after layer 2 would cut both
    ds = sweep({"video->question": route(4, start=3)}, window=3)
    assert prune_plan(ds).drop_after == 4  # the harmful window 2-4 counts whole (the union rule alone: L = 0)


def test_frame_local_layers_from_cross_frame():
    ds = sweep({"video->question": route(4), "cross_frame": route(2)})
    plan = prune_plan(ds, frame_local=True)
    assert plan.spec.drop_after == 4
    assert plan.spec.frame_local_layers == (3, 4)
    with pytest.raises(MapflowError, match="cross_frame"):
        prune_plan(sweep({"video->question": route(4)}), frame_local=True)


def test_explicit_layer_and_round_trip(tmp_path):
    plan = prune_plan(drop_video_after=4)
    assert plan.spec.drop_after == 4 and plan.rule == "explicit"
    derived = prune_plan(sweep({"video->question": route(3)}), threshold=-7)
    path = derived.save(tmp_path / "plan.json")
    saved = json.loads(path.read_text())
    assert saved["spec"]["drop_after"] == 3 and saved["threshold"] == -7 and saved["rule"] == "harmless_windows"
    assert saved["sources"][0]["study"] == "information_flow" and len(saved["sources"][0]["provenance_sha256"]) == 64
    assert PrunePlan.load(path) == derived


def test_errors_name_the_store_and_the_field(tmp_path):
    ds = sweep({"video->question": route(3)})
    with pytest.raises(MapflowError, match="no 'rel_change'"):
        prune_plan(ds.drop_vars("rel_change"))
    with pytest.raises(MapflowError, match="no flow from the video.*question->last"):
        prune_plan(sweep({"question->last": route(3)}))
    with pytest.raises(MapflowError, match="different models"):
        prune_plan([ds, sweep({"video->question": route(3)}, model="other")])
    with pytest.raises(MapflowError, match="does not exist"):
        prune_plan(tmp_path / "missing.zarr")
    with pytest.raises(MapflowError, match="needs knockout stores"):
        prune_plan([])
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(MapflowError, match="bad.json is not a mapflow pruning plan"):
        PrunePlan.load(tmp_path / "bad.json")


def test_effective_pathway_store():
    ds = xr.Dataset(
        {
            "open_layers": (("sample", "route"), np.asarray([["0-3", "3-5", "5-8"]] * 2, dtype=object)),
            "correct_after": (("sample", "condition"), np.ones((2, 2), dtype=bool)),
        },
        coords={"route": ["cross_frame", "video_question", "question_last"], "condition": ["clean", "effective"]},
        attrs={"provenance": {"study": "effective_pathway", "model": {"name": "m", "weights_hash": "m"}}},
    )
    plan = prune_plan(ds, frame_local=True)
    assert plan.spec.drop_after == 4
    assert plan.spec.frame_local_layers == (3, 4)
    assert plan.rule == "effective_pathway_layers"
