"""What a study run measures (`StudyConfig`): saved in the results' provenance and compared on resume."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..differences import default
from ..knockout.cells import SAMPLE_MODES
from ..knockout.engine import PLANS
from ..knockout.flows import Window
from ..knockout.screen import parse_plan


@dataclass(frozen=True)
class StudyConfig:
    """What a study run measures. Saved in the results' provenance, and compared on resume."""

    window: Window = field(default_factory=Window)
    samples: str = "correct"
    num_frames: int = 8
    frame_rule: str = "segment_midpoint"
    prompt_template: str | None = None  # None: the checkpoint's own, else the benchmark's (`mapflow.analysis.resolve`)
    gt_token: str = default("gt_token")  # or "vocab": the released code's bare-letter vocabulary lookup
    non_option_includes_prefix: bool = True
    flows: tuple[str, ...] | None = None  # None: the study's own flows
    plan: str = "auto"  # "naive": one full forward per configuration, vision included (the paper code's cost)
    # study-specific settings (``--option key=value``), documented in each study's module; values are strings
    options: dict = field(default_factory=dict)
    seed: int = 42  # for a study's own random choices (e.g. the random-blocking control), derived per sample
    heads: tuple[int, ...] | None = None  # cut every flow in these query heads only (``--heads``); None: all heads

    def option(self, name: str, default: str | None = None) -> str | None:
        return self.options.get(name, default)

    def __post_init__(self):
        if self.samples not in SAMPLE_MODES:
            raise ValueError(f"samples must be one of {SAMPLE_MODES}, got '{self.samples}'")
        if self.gt_token not in ("continuation", "vocab"):
            raise ValueError(f"gt_token must be 'continuation' or 'vocab', got '{self.gt_token}'")
        if self.plan not in PLANS:
            parse_plan(self.plan)  # the screen's plans, or an error naming the valid ones

    @property
    def method(self) -> str:
        """``exact`` or ``screen`` (first-order estimates, `mapflow.knockout.screen`)."""
        return "exact" if self.plan in PLANS else "screen"

    def to_dict(self) -> dict:
        return {
            "window_style": self.window.style,
            "window": self.window.size,
            "window_ranges": [list(r) for r in self.window.ranges],
            "samples": self.samples,
            "num_frames": self.num_frames,
            "frame_rule": self.frame_rule,
            "prompt_template": self.prompt_template,
            "gt_token": self.gt_token,
            "non_option_includes_prefix": self.non_option_includes_prefix,
            "flows": None if self.flows is None else list(self.flows),
            "options": dict(sorted(self.options.items())),
            "seed": self.seed,
            **({"heads": list(self.heads)} if self.heads is not None else {}),
            **({"method": "screen", "plan": self.plan} if self.method == "screen" else {}),
        }
        # an exact `plan` is left out on purpose: every exact plan gives the same numbers, so a run may resume under
        # another; the screen's estimates are not the same numbers, so they are named
