"""Command-line option values that several commands read (``--heads``, ``--option KEY=VALUE``)."""

from __future__ import annotations

from ..errors import MapflowError


def parse_heads(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(h) for h in text.split(","))
    except ValueError:
        raise MapflowError(f"cannot read --heads '{text}': write comma-separated head indices, e.g. 3,7") from None


def parse_options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise MapflowError(f"cannot read --option '{pair}': write KEY=VALUE")
        options[key.strip()] = value.strip()
    return options
