"""Frame-pair knockout (beyond the paper's Fig. 2): which frames does the model compare, and in which layers?

``cross_frame`` decomposed: for each pair of frames (earlier ``source_frame`` -> later ``target_frame``) the later
frame may not read the earlier frame, in a window of layers around each layer; every other edge stays. A frame is
what ``cross_frame`` cuts, its run (`TokenLayout.runs`): on VideoLLaMA3 its ``Time t s:`` label, separator and
tokens, as the paper's code splits the video; elsewhere its feature tokens. Stores ``rel_change(sample, source_frame,
target_frame, layer)`` (NaN where source >= target). Options: ``by=distance`` knocks out every pair at one temporal
distance ``d = target - source`` together instead and stores ``rel_change(sample, distance, layer)``;
``unit=tokens`` cuts between the frames' feature tokens only (as ``cross_frame_tokens``; labels may then carry
information across). Needs at least two frames (``--frames``).
"""

import numpy as np
import xarray as xr

import mapflow as mf
from mapflow.analysis.context import StudyContext
from mapflow.analysis.options import StudyOption
from mapflow.differences import default
from mapflow.errors import KnockoutConfigError

MODES = ("pair", "distance")
# what one frame is: its run, as cross_frame (default), or its feature tokens only, as cross_frame_tokens
UNITS = {"run": ("frame_run", "frame_distance"), "tokens": ("frame", "frame_distance_tokens")}
OPTIONS = {
    "by": StudyOption("knock out each pair of frames, or every pair at one temporal distance together", "pair", MODES),
    "unit": StudyOption(
        "what one frame is: its run (labels included, as cross_frame) or its feature tokens only",
        default("unit"),
        tuple(UNITS),
    ),
}


def pair_grid(ds: xr.Dataset, pairs, frames: int) -> xr.Dataset:
    """The ``flow`` axis of pair knockouts as a (source_frame, target_frame) grid; pairs not measured are NaN (-1
    for token ids)."""
    out = {}
    for name, var in ds.data_vars.items():
        if "flow" not in var.dims:
            out[name] = var
            continue
        rest = [d for d in var.dims if d != "flow"]
        fill = -1 if var.dtype.kind in "iu" else np.nan
        grid = np.full((frames, frames, *(ds.sizes[d] for d in rest)), fill, dtype=var.dtype)
        values = var.transpose("flow", *rest).values
        for i, (source, target) in enumerate(pairs):
            grid[source, target] = values[i]
        out[name] = (("source_frame", "target_frame", *rest), grid)
    coords = {k: v for k, v in ds.coords.items() if "flow" not in v.dims}
    coords.update(source_frame=np.arange(frames), target_frame=np.arange(frames))
    return xr.Dataset(out, coords=coords, attrs=ds.attrs)


def report_section(w, stores):
    """Beyond the paper: one earlier -> later frame pair knocked out at a time."""
    from mapflow.viz import figures

    for st in stores:
        if "source_frame" not in st.ds.dims:
            continue
        s = w.section(f"Frame pairs, {st.model}", "beyond the paper")
        w.figure(
            s,
            f"frame_pairs_{st.model}",
            lambda st=st: figures.frame_pair_figure(st.ds),
            "Knocking out one earlier frame -> later frame pair at a time (rows: keys of the source frame, "
            "columns: queries of the target frame), mean % change per bin of sweep layers",
        )
        mean = st.ds["rel_change"].mean("sample", skipna=True)
        if np.isfinite(mean.values).any():
            cell = mean.where(mean == mean.min(), drop=True)
            w.reading(
                s,
                f"Strongest single pair: frame {int(cell['source_frame'][0]) + 1} -> frame "
                f"{int(cell['target_frame'][0]) + 1} around layer {int(cell['layer'][0]) + 1}, "
                f"{float(mean.min()):.2f} % (frames and layers numbered from 1).",
            )


@mf.study(
    screenable=True,
    options=OPTIONS,
    report=({"order": 170, "section": report_section},),
    demo=(  # its runs in the demo suite; `order` places them in the suite
        # beyond the paper: finer granularity (~1 s of CPU per sample on the organism)
        {"order": 200, "name": "frame_pairs-video", "window": True, "limit_scale": 0.2},
    ),
)
def run(ctx: StudyContext):
    mode = ctx.config.option("by", OPTIONS["by"].default)
    if mode not in MODES:
        raise KnockoutConfigError(f"--option by={mode}: choose one of {', '.join(MODES)}")
    unit = ctx.config.option("unit", default("unit"))
    if unit not in UNITS:
        raise KnockoutConfigError(f"--option unit={unit}: choose one of {', '.join(UNITS)}")
    frame_name, distance_name = UNITS[unit]
    frames = len(ctx.layout.frames)
    if frames < 2:
        raise KnockoutConfigError(
            f"frame_pairs needs at least 2 frames; this input has {frames} (set --frames 2 or "
            "more; a frame unit of temporally grouped frames counts as one)"
        )
    if mode == "distance":
        ds = ctx.sweep([f"{distance_name}:{d}" for d in range(1, frames)])
        return ds.rename(flow="distance").assign_coords(distance=np.arange(1, frames))
    pairs = [(source, target) for target in range(frames) for source in range(target)]
    ds = ctx.sweep([f"{frame_name}_{source}->{frame_name}_{target}" for source, target in pairs])
    return pair_grid(ds, pairs, frames)
