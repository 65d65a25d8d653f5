"""A full disk while writing a result store: one sentence saying where, how much is free and what was kept.

Every file of a store is written whole (temporary file + rename), so a full disk leaves the store at its last commit
or, when the disk filled while the metadata was being consolidated, at the new commit with a stale ``.zmetadata``.
`readers_follow_the_count` then deletes that stale file (which needs no space), so every reader sees the committed
count, and the message reports exactly that count.
"""

from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from ..errors import MapflowError
from .integrity import COMMITTED_KEY, StoreDamaged, consolidated_count, read_root_attrs


def is_disk_full(err: BaseException) -> bool:
    seen = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextmanager
def disk_full_says_so(path: Path):
    """A full disk while creating or opening a store for writing as one sentence, instead of the traceback of
    whatever write hit it first (the lock file, the repair)."""
    try:
        yield
    except OSError as err:
        if not is_disk_full(err):
            raise
        free = f"({free_space(path)} free there)"
        try:
            kept = readers_follow_the_count(path)
        except MapflowError:
            raise MapflowError(
                f"disk full while creating {path} {free}: nothing was stored; free some space and "
                "rerun the same command"
            ) from None
        raise MapflowError(
            f"disk full while opening {path} for writing {free}: its {kept} committed sample(s) are "
            "kept; free some space and rerun the same command to resume"
        ) from None


def readers_follow_the_count(path: Path) -> int:
    """The committed count, once every reader sees exactly it.

    After a commit whose consolidation failed (a full disk), the consolidated metadata is one commit behind; plain
    `xarray.open_zarr` would show one sample less than the count. Deleting that stale file needs no space (it frees
    some), and without it every reader reads the arrays' own metadata, which the count never runs ahead of (data
    first, count after). The next open for writing consolidates again."""
    count = read_root_attrs(path)[COMMITTED_KEY]
    try:
        stale = consolidated_count(path) not in (None, count)
    except StoreDamaged:
        stale = True
    if stale:
        (path / ".zmetadata").unlink(missing_ok=True)
    return count


def free_space(path: Path) -> str:
    """Free space on the file system holding `path` (or its nearest existing parent), for a disk-full message."""
    where = Path(os.path.abspath(path))
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        free = float(shutil.disk_usage(where).free)
    except OSError:
        return "unknown space"
    if free < 1024:
        return f"{free:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        free /= 1024
        if free < 1024 or unit == "GiB":
            return f"{free:.1f} {unit}"
