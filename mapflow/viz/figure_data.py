"""The numbers a figure draws, recorded on its axes while it is drawn, so the report can show them on hover.

`mapflow.viz.figures` calls these next to each plot call; `mapflow.viz.report_explore` reads them back after the
figure's layout and adds where each point/cell/bar lies in the saved PNG. Recording changes nothing that is drawn.

Each axes carries one panel record: ``fields`` (what the panel is: task, flow, ...), ``value_name`` and a list of
``items``: ``series`` (x values, y values, optional band low/high, n per x), ``cells`` (a grid of values with row and
column labels, n, optional band, the colour limits and colormap) or ``bars`` (labels, values, n).
"""

from __future__ import annotations

import numpy as np

ATTRIBUTE = "_mapflow_panel"  # attribute of a matplotlib Axes holding its record


def _floats(values) -> list[float | None]:
    """JSON-ready floats, None for NaN/inf (not drawn)."""
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=float).ravel()]


def _labels(values) -> list[str]:
    return [str(v) for v in np.asarray(values).ravel()]


def panel(ax, **fields) -> dict:
    """The record of ``ax`` (created on first use); ``fields`` (e.g. task=..., flow=...) describe the whole panel."""
    record = ax.__dict__.setdefault(ATTRIBUTE, {"fields": {}, "items": [], "value_name": "value"})
    record["fields"].update({k: str(v) for k, v in fields.items() if v is not None})
    return record


def record_series(
    ax, x, y, *, series: dict, low=None, high=None, n=None, x_name: str = "layer", value_name: str, band: str = ""
) -> None:
    """A line drawn at (x, y), with its band [low, high] (``band`` names it) and n samples per point."""
    record = panel(ax)
    record["value_name"] = value_name
    size = len(np.asarray(x))
    record["items"].append(
        {
            "kind": "series",
            "series": {k: str(v) for k, v in series.items()},
            "x_name": x_name,
            "x": _labels(x),
            "x_data": _floats(x),
            "y": _floats(y),
            "low": _floats(low) if low is not None else None,
            "high": _floats(high) if high is not None else None,
            "n": [int(v) for v in np.broadcast_to(np.asarray(n if n is not None else -1), (size,))],
            "band": band,
        }
    )


def record_cells(
    ax,
    values,
    *,
    rows,
    cols,
    row_name: str,
    col_name: str,
    value_name: str,
    vmin: float,
    vmax: float,
    cmap: str,
    n=None,
    low=None,
    high=None,
    band: str = "",
    extent=None,
    origin: str = "lower",
) -> None:
    """An image of ``values`` (rows x cols) drawn with imshow; ``extent`` as given to imshow (default: cell i at
    data coordinate i), ``origin`` as imshow's."""
    values = np.asarray(values, dtype=float)
    n_rows, n_cols = values.shape
    if extent is None:
        extent = (
            (-0.5, n_cols - 0.5, -0.5, n_rows - 0.5) if origin == "lower" else (-0.5, n_cols - 0.5, n_rows - 0.5, -0.5)
        )
    record = panel(ax)
    record["value_name"] = value_name
    shape = values.shape
    record["items"].append(
        {
            "kind": "cells",
            "rows": _labels(rows),
            "cols": _labels(cols),
            "row_name": row_name,
            "col_name": col_name,
            "values": _floats(values),
            "n": [int(v) for v in np.broadcast_to(np.asarray(n if n is not None else -1), shape).ravel()],
            "low": _floats(np.broadcast_to(low, shape)) if low is not None else None,
            "high": _floats(np.broadcast_to(high, shape)) if high is not None else None,
            "band": band,
            "vmin": float(vmin),
            "vmax": float(vmax),
            "cmap": cmap,
            "extent": [float(e) for e in extent],
            "origin": origin,
        }
    )


def record_bars(ax, labels, values, *, n=None, x_name: str, value_name: str) -> None:
    """Bars at positions 0..k-1 (categorical x) with heights ``values``."""
    record = panel(ax)
    record["value_name"] = value_name
    size = len(np.asarray(labels))
    record["items"].append(
        {
            "kind": "bars",
            "x_name": x_name,
            "x": _labels(labels),
            "y": _floats(values),
            "n": [int(v) for v in np.broadcast_to(np.asarray(n if n is not None else -1), (size,))],
        }
    )


def recorded(ax) -> dict | None:
    return ax.__dict__.get(ATTRIBUTE)
