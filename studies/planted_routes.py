"""Knockout of each planted route inside and outside its planted layers (the recovery check of ``organism-pathway``).

``--option routes=JSON``: the checkpoint's ``planted_routes`` (``{"cross_frame": [[0, 3]], "video->question": …}``,
0-based half-open ranges; ``[]`` = closed everywhere). Per flow two cells: ``inside`` (blocked in its planted layers;
NaN for a route closed everywhere) and ``outside`` (blocked in every other layer; NaN when it is open everywhere).
Dims ``(flow, region)``; accuracy after knockout is ``pred_knockout == answer_token``. Runs on all samples.
"""

import json

import numpy as np
import xarray as xr

import mapflow as mf
from mapflow.analysis.context import StudyContext
from mapflow.analysis.options import StudyOption
from mapflow.errors import KnockoutConfigError

REGIONS = ("inside", "outside")


def parse_routes(text: str) -> dict:
    """``{"flow": [[a, b], ...], ...}`` (0-based half-open layer ranges per flow)."""
    routes = json.loads(text)
    if not isinstance(routes, dict) or not all(
        isinstance(ranges, list)
        and all(isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) for x in r) for r in ranges)
        for ranges in routes.values()
    ):
        raise ValueError('write {"flow": [[a, b], ...], ...}')
    return routes


OPTIONS = {
    "routes": StudyOption(
        "the checkpoint's planted_routes: per flow its 0-based half-open layer ranges",
        parse=parse_routes,
        expects='JSON {"flow": [[a, b], ...]}',
        required=True,
    ),
}


def planted_layers(routes: dict, num_layers: int) -> dict[str, dict[str, tuple[int, ...]]]:
    """flow -> {"inside": layers, "outside": layers} from the planted ranges."""
    sets = {}
    for flow, ranges in routes.items():
        inside = sorted({layer for a, b in ranges for layer in range(a, b)})
        if any(not 0 <= layer < num_layers for layer in inside):
            raise KnockoutConfigError(f"planted range {ranges} of '{flow}' reaches outside 0..{num_layers - 1}")
        sets[flow] = {"inside": tuple(inside), "outside": tuple(i for i in range(num_layers) if i not in inside)}
    return sets


@mf.study(
    samples="all",
    options=OPTIONS,
)
def run(ctx: StudyContext):
    text = ctx.config.option("routes")
    if not text:
        raise KnockoutConfigError("study planted_routes needs --option routes=JSON (the checkpoint's planted_routes)")
    sets = planted_layers(parse_routes(text), ctx.adapter.num_layers)
    parts = []
    for flow, regions in sets.items():
        measured = [r for r in REGIONS if regions[r]]
        ds = ctx.knockout([flow], {r: regions[r] for r in measured}, dim="region")
        layers = ds["blocked_layers"].values
        ds = ds.drop_vars("blocked_layers").reindex(region=list(REGIONS))
        ds["blocked_layers"] = (
            "region",
            np.asarray([layers[measured.index(r)] if r in measured else "" for r in REGIONS], dtype=object),
        )
        parts.append(ds)
    stacked = [n for n, v in parts[0].data_vars.items() if "region" in v.dims]
    ds = xr.concat(parts, dim="flow", data_vars=stacked, coords="minimal", compat="equals")
    ds["pred_knockout"] = ds["pred_knockout"].fillna(-1).astype(np.int64)
    return ds
