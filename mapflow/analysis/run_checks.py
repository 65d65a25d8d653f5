"""The checks of a run's settings that know flows and windows (the knockout layer's terms), made before any model
runs or any store exists; the checks of plain user input are `mapflow.inputs.checks`."""

from __future__ import annotations

from ..errors import MapflowError
from ..inputs import checks as inputs
from ..inputs.prompts import build_prompt
from ..knockout.flows import CROSS_FRAME_KINDS, Flow, Window
from .declaration import declaration_of

WINDOW_STYLES = ("center", "inverse", "bottom_up", "top_down")


def check_window_setting(window, window_style: str) -> None:
    """The window as given (before the model is known): a whole number of layers or a `Window`, and a known style."""
    if window is not None and not isinstance(window, Window) and (not inputs.is_whole(window) or window < 1):
        raise MapflowError(
            f"--window {window!r}: give the knockout window size as a whole number of layers >= 1 "
            "(or a mapflow.knockout.flows.Window)"
        )
    if window_style not in WINDOW_STYLES:
        raise MapflowError(f"--window-style {window_style!r}: choose one of {', '.join(WINDOW_STYLES)}")


def check_flows(flows, samples, template, num_frames: int, study_flows=()) -> None:
    """Every span a --flows block names exists in the inputs (the first sample's prompt decides the template's; the
    study's own flows add the spans it makes per sample, such as a generated response)."""
    if not flows:
        return
    known = set(inputs.LAYOUT_SPANS) | {f"frame_{i}" for i in range(num_frames)}
    known |= {
        name
        for text in study_flows
        for block in Flow.parse(text).blocks
        for name in (block.source, block.target)
        if name not in CROSS_FRAME_KINDS
    }
    if samples:
        try:
            prompt = build_prompt(samples[0], template)
            known |= {segment.name for segment in prompt.segments}
            known |= {f"option_{letter}" for letter in prompt.option_letters or ()}
        except MapflowError:
            pass  # that sample is reported on its own; the fixed spans still get checked
    for text in flows:
        try:
            flow = Flow.parse(text)
        except MapflowError as err:
            raise MapflowError(f"--flows {text}: {err}") from None
        for block in flow.blocks:
            for name in (block.source, block.target):
                if name not in CROSS_FRAME_KINDS and name not in known:
                    raise MapflowError(
                        f"--flows {text}: no span named '{name}'; known spans: "
                        f"{', '.join(sorted(known, key=_span_order))}, or "
                        f"{' / '.join(CROSS_FRAME_KINDS)}"
                    )


def _span_order(name: str):
    return (name.startswith("frame_"), len(name) if name.startswith("frame_") else 0, name)


def check_run_options(study, adapter, samples, config, template, window_given: bool = True) -> None:
    """Every option that depends on the model or the data, checked before the store is created."""
    inputs.check_window(config.window, adapter.num_layers, window_given)
    declared = declaration_of(study)
    check_flows(config.flows, samples, template, config.num_frames, declared.flows)
    inputs.check_frames_available(samples, config.num_frames, config.frame_rule)
    if declared.check is not None:  # a study's own options against the model (its module doc)
        declared.check(adapter, config, window_given=window_given)
