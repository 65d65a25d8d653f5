"""Whether a store holds exact knockouts or the screen's first-order estimates (``--plan screen``).

A screened store says so twice: its samples' ``method="screen"`` attribute and its provenance's ``config.method``
(`mapflow.analysis.context.StudyConfig.to_dict`). Figures mark such stores (`SCREEN_MARK` in the title); what needs exact
numbers (Table E's layer rule, the paper's tables) refuses them with `require_exact`.
"""

from __future__ import annotations

from ..errors import MapflowError

SCREEN_MARK = "screen estimate (first-order, --plan screen): not exact knockouts"


def is_screen_store(ds) -> bool:
    attrs = getattr(ds, "attrs", {}) or {}
    provenance = attrs.get("provenance") or {}
    config = provenance.get("config") or {} if isinstance(provenance, dict) else {}
    return attrs.get("method") == "screen" or config.get("method") == "screen"


def require_exact(ds, what: str, where: str = "") -> None:
    """Refuse a screened store where ``what`` needs exact knockout numbers."""
    if is_screen_store(ds):
        place = f" {where}" if where else ""
        raise MapflowError(
            f"{what} needs exact knockout results, but the store{place} holds first-order screen "
            "estimates (run with --plan screen): rerun that study with an exact plan (the default "
            "--plan auto)"
        )
