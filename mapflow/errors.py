"""Error types that say where bad input came from (file, sample, field)."""

from __future__ import annotations


class MapflowError(Exception):
    """Base class for every error mapflow raises on purpose."""


class DataError(MapflowError, ValueError):
    """Bad benchmark input. The message names the file, the sample and the field."""

    def __init__(self, message: str, *, file=None, sample=None, field=None):
        self.file = None if file is None else str(file)
        self.sample = sample
        self.field = field
        where = []
        if file is not None:
            where.append(f"file {self.file}")
        if sample is not None:
            where.append(f"sample {sample}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = f"[{', '.join(where)}] " if where else ""
        super().__init__(prefix + message)


class LayoutError(MapflowError, ValueError):
    """The model input does not have the token layout an analysis needs (e.g. no video tokens)."""


class KnockoutConfigError(MapflowError, ValueError):
    """A knockout configuration that cannot be run exactly (e.g. a query row left with no key)."""


class ModelLoadError(MapflowError, RuntimeError):
    """A checkpoint directory that cannot be loaded or fails the load-time self-test."""


class RunInterrupted(MapflowError):
    """An error no later sample can escape either (e.g. a remote server went away): the runner stops instead of
    recording every remaining sample as failed. Samples already stored stay stored; a re-run resumes after them."""

    sample: str | None = None

    def at_sample(self, sample_id: str) -> RunInterrupted:
        """The same error, now naming the sample the run stopped at."""
        self.sample = str(sample_id)
        self.args = (f"{self.args[0] if self.args else ''} (stopped at sample {sample_id})",)
        return self


class StudyError(RunInterrupted):
    """A study that breaks its contract (e.g. returns no `xarray.Dataset`): every sample would fail the same way."""
