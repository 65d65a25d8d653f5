"""What a pruned forward pass drops and where: the plan shared by the pruned forward, its FLOP count and the
evaluation (the contract in issue 27).

"Drop after layer L" (0-based decoder layer index L): the dropped tokens are in the sequence for layers 0..L inclusive
and leave it before layer L+1 runs. L = num_layers - 1 drops nothing that any layer sees. Positions / rotary of the
remaining tokens stay those of the full sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

DROP_KINDS = ("video", "least_attended")


@dataclass(frozen=True)
class PruneSpec:
    drop_after: int | None = None  # L as above; None = nothing dropped
    drop: str = "video"  # "video": every video token (the pathway plan); "least_attended": FastV-style, the `ratio`
    #   share of the video tokens that received the least attention in layer L (mean over heads and over all query
    #   positions of layer L's attention probabilities)
    ratio: float = 1.0  # share of video tokens dropped (only "least_attended" uses it)
    frame_local_layers: tuple[int, ...] = ()  # layers where video tokens attend only to the tokens before the video
    #   and to their own frame's tokens, computed per frame (block-sparse)

    def __post_init__(self):
        if self.drop not in DROP_KINDS:
            raise ValueError(f"PruneSpec.drop must be one of {DROP_KINDS}, got {self.drop!r}")
        if not 0.0 <= float(self.ratio) <= 1.0:
            raise ValueError(f"PruneSpec.ratio must lie in [0, 1], got {self.ratio!r}")
        if self.drop_after is not None and int(self.drop_after) < 0:
            raise ValueError(f"PruneSpec.drop_after must be a layer index >= 0 or None, got {self.drop_after!r}")
        layers = tuple(sorted({int(layer) for layer in self.frame_local_layers}))
        if any(layer < 0 for layer in layers):
            raise ValueError(
                f"PruneSpec.frame_local_layers must be layer indices >= 0, got {self.frame_local_layers!r}"
            )
        object.__setattr__(self, "frame_local_layers", layers)

    @property
    def drops_anything(self) -> bool:
        return self.drop_after is not None and (self.drop == "video" or self.ratio > 0)

    def label(self) -> str:
        """Short human name: "unpruned", "video after 4", "fastv K=2 R=50%", "... + frame-local 0-3"."""
        if not self.drops_anything:
            base = "unpruned"
        elif self.drop == "video":
            base = f"video after {self.drop_after}"
        else:
            base = f"fastv K={self.drop_after} R={round(100 * self.ratio):g}%"
        if self.frame_local_layers:
            base += " + frame-local " + _ranges(self.frame_local_layers)
        return base

    def to_dict(self) -> dict:
        return {
            "drop_after": self.drop_after,
            "drop": self.drop,
            "ratio": float(self.ratio),
            "frame_local_layers": list(self.frame_local_layers),
        }

    @classmethod
    def from_dict(cls, d: dict) -> PruneSpec:
        unknown = set(d) - {"drop_after", "drop", "ratio", "frame_local_layers"}
        if unknown:
            raise ValueError(f"PruneSpec.from_dict: unknown fields {sorted(unknown)}")
        drop_after = d.get("drop_after")
        return cls(
            drop_after=None if drop_after is None else int(drop_after),
            drop=str(d.get("drop", "video")),
            ratio=float(d.get("ratio", 1.0)),
            frame_local_layers=tuple(int(x) for x in d.get("frame_local_layers", ())),
        )


def _ranges(layers: tuple[int, ...]) -> str:
    """(0, 1, 2, 5) -> "0-2,5"."""
    parts, start, prev = [], layers[0], layers[0]
    for layer in layers[1:] + (None,):
        if layer is not None and layer == prev + 1:
            prev = layer
            continue
        parts.append(f"{start}-{prev}" if prev > start else f"{start}")
        if layer is not None:
            start = prev = layer
    return ",".join(parts)
