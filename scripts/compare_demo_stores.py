"""Compare two `mapflow demo` output folders: every zarr store's data variables, coordinates and attributes must be
identical, provenance included except what names the moment, the machine and the code version
(`VOLATILE_PROVENANCE`: created, versions, git, hostname, elapsed_s) and the output folder itself (a run that reads
other stores records their paths, in provenance and in text variables). Tables must match byte for byte, except the measured wall-clock columns
(`WALL_CLOCK_COLUMNS`) of CSV tables.

    python scripts/compare_demo_stores.py /tmp/demo-before /tmp/demo-after [CHECKOUT_BEFORE CHECKOUT_AFTER]

With two checkouts given (each demo run from its own source tree), paths under them compare as ``<REPO>``.

Run on a demo made before and one made after a restructuring, to show that it changed no result (docs/development.md, "Layout").
Exit status 0 when everything matches; otherwise each difference is printed and the status is 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

VOLATILE_PROVENANCE = ("created", "versions", "git", "hostname", "elapsed_s")
WALL_CLOCK_COLUMNS = ("wall ratio",)  # calibration.csv: seconds measured on a shared machine


def _stable(value, out_dir: Path, checkout: Path | None):
    """``value`` with the provenance keys that name the moment or the code version dropped, at any depth, the
    output folder's path replaced by ``<OUT>`` and the checkout's by ``<REPO>``."""
    if isinstance(value, dict):
        return {k: _stable(v, out_dir, checkout) for k, v in value.items() if k not in VOLATILE_PROVENANCE}
    if isinstance(value, list):
        return [_stable(v, out_dir, checkout) for v in value]
    if isinstance(value, str):
        value = value.replace(str(out_dir), "<OUT>")
        return value.replace(str(checkout), "<REPO>") if checkout else value
    return value


def load_store(path: Path, checkout: Path | None = None) -> xr.Dataset:
    ds = xr.open_zarr(path).load()
    ds.attrs = _stable(dict(ds.attrs), path.parent, checkout)
    for name, variable in ds.data_vars.items():  # text variables may name a store the run read (e.g. layer_source)
        if variable.dtype.kind in "OUT":  # object, fixed-width and variable-width (StringDType) text
            ds[name] = variable.copy(
                data=np.vectorize(lambda v: _stable(v, path.parent, checkout), otypes=[object])(variable.values)
            )
    return ds


def same_table(a: Path, b: Path) -> bool:
    if a.suffix != ".csv":
        return a.read_bytes() == b.read_bytes()
    left, right = pd.read_csv(a), pd.read_csv(b)
    drop = [c for c in WALL_CLOCK_COLUMNS if c in left.columns]
    return left.drop(columns=drop).equals(right.drop(columns=[c for c in drop if c in right.columns]))


def compare(before: Path, after: Path, checkouts=(None, None)) -> list[str]:
    problems = []
    stores_before = sorted(p.name for p in before.glob("*.zarr"))
    stores_after = sorted(p.name for p in after.glob("*.zarr"))
    if stores_before != stores_after:
        problems.append(f"store lists differ: {sorted(set(stores_before) ^ set(stores_after))}")
    for name in sorted(set(stores_before) & set(stores_after)):
        try:
            xr.testing.assert_identical(load_store(before / name, checkouts[0]), load_store(after / name, checkouts[1]))
        except AssertionError as err:
            problems.append(f"{name}: {str(err)[:2000]}")
        else:
            print(f"identical: {name}")
    tables_before = sorted(p.relative_to(before) for p in (before / "tables").rglob("*") if p.is_file())
    tables_after = sorted(p.relative_to(after) for p in (after / "tables").rglob("*") if p.is_file())
    if tables_before != tables_after:
        problems.append(f"table lists differ: {sorted(set(map(str, tables_before)) ^ set(map(str, tables_after)))}")
    for rel in sorted(set(tables_before) & set(tables_after)):
        if not same_table(before / rel, after / rel):
            problems.append(f"{rel}: contents differ")
        else:
            print(f"identical: {rel}")
    return problems


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 4):
        print(__doc__)
        return 2
    checkouts = (Path(args[2]).resolve(), Path(args[3]).resolve()) if len(args) == 4 else (None, None)
    problems = compare(Path(args[0]), Path(args[1]), checkouts)
    for problem in problems:
        print(f"DIFFERENT: {problem}")
    print("all stores and tables identical" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
