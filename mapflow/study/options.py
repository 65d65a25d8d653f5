"""The ``--option key=value`` settings a study declares, and their check before the store exists.

A study module declares its own options as ``OPTIONS = {"name": StudyOption(...)}``; `COMMON_OPTIONS` are the ones
every study takes (read by the analysis core). `check_study_options` refuses an undeclared name (suggesting the
nearest declared one) and a value its option cannot take (naming the allowed ones), so a typo costs a refusal, not a
store of silently ignored settings. Checks that need the model (a layer count, a preset's depth) stay in the study's
own ``check_options(adapter, config)`` hook (`mapflow.study.run_checks.check_run_options`).

Values are strings, as ``--option`` gives them; a default is the text the study reads when the option is absent
(None: absent means "not set"). Defaults that `mapflow.differences` lists come from there (`default`).
"""

from __future__ import annotations

import difflib
import json
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..differences import default
from ..errors import MapflowError


@dataclass(frozen=True)
class StudyOption:
    """One ``--option`` a study takes: its one-line help, default, and either the allowed values or a parser.

    ``parse`` reads the text and raises ValueError (or a MapflowError) with what is wrong; ``expects`` says what a
    good value looks like, for the refusal and for ``mapflow studies``.
    """

    help: str
    default: str | None = None
    choices: tuple[str, ...] = ()
    parse: Callable[[str], object] | None = None
    expects: str = ""
    required: bool = False  # the study cannot run without it (refused before the store when missing)

    def check(self, name: str, value: str, study: str) -> None:
        if self.choices and value not in self.choices:
            raise MapflowError(f"--option {name}={value}: study {study} takes {name} = {' | '.join(self.choices)}")
        if self.parse is not None:
            try:
                self.parse(value)
            except (ValueError, TypeError, MapflowError) as err:
                raise MapflowError(f"--option {name}={value}: study {study} takes {name} = {self.expects or 'a valid value'}"
                                   f" ({err})") from None

    def describe(self) -> str:
        """``name=VALUES (default X): help`` without the name."""
        values = " | ".join(self.choices) if self.choices else f"<{self.expects or 'text'}>"
        shown = "required" if self.required else f"default {'not set' if self.default is None else self.default}"
        return f"{values} ({shown}): {self.help}"


# --- parsers for common kinds of values -------------------------------------------------------------------------------


def whole_number(minimum: int = 0) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise ValueError(f"{value} < {minimum}")
        return value

    return parse


def number(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("not a finite number")
    return value


def share(text: str) -> float:
    value = number(text)
    if not 0 < value < 1:
        raise ValueError(f"{value} is not in (0, 1)")
    return value


def whole_numbers(minimum: int = 0) -> Callable[[str], list[int]]:
    one = whole_number(minimum)

    def parse(text: str) -> list[int]:
        values = [one(part.strip()) for part in text.split(",")]
        if not values:
            raise ValueError("empty list")
        return values

    return parse


def layer_ranges(text: str):
    from ..knockout.flows import Window

    return Window.parse_ranges(text)


def json_object(text: str) -> dict:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"a JSON object is needed, got {type(value).__name__}")
    return value


def existing_paths(text: str) -> list[Path]:
    paths = [Path(part.strip()).expanduser() for part in text.split(",") if part.strip()]
    missing = [str(p) for p in paths if not p.exists()]
    if not paths or missing:
        raise ValueError(f"no such store: {', '.join(missing) or '(none given)'}")
    return paths


# --- the options every study takes (read by `mapflow.study.context`) --------------------------------------------------


def _common_options() -> dict[str, StudyOption]:
    from ..knockout.screen import METRICS
    from .context import CORRECTNESS_RULES

    return {
        "correct_by": StudyOption("how a prediction counts as correct: the decoded text ignoring case (the released "
                                  "code) or the exact answer token", default("correct_by"), CORRECTNESS_RULES),
        "screen_metric": StudyOption("the quantity the first-order screen (--plan screen) estimates",
                                     "logodds", METRICS),
    }


COMMON_OPTION_NAMES = ("correct_by", "screen_metric")


def declared_options(study) -> dict[str, StudyOption] | None:
    """Every option ``study`` takes (its own ``OPTIONS`` and the common ones), or None when it declares none (a user's
    study written before declarations: its names cannot be checked)."""
    own = getattr(study, "OPTIONS", None)
    if own is None:
        return None
    if not isinstance(own, Mapping) or not all(isinstance(o, StudyOption) for o in own.values()):
        raise MapflowError(f"study {getattr(study, '__name__', study)}: OPTIONS must map names to "
                           "mapflow.study.options.StudyOption")
    return {**_common_options(), **own}


def check_study_options(study, study_name: str, options: Mapping[str, str]) -> None:
    """Refuse an option ``study`` does not declare (naming the nearest declared one) or a value it cannot take."""
    declared = declared_options(study)
    if declared is None:
        common = _common_options()
        for name, value in options.items():
            if name in common:
                common[name].check(name, str(value), study_name)
        if options:
            warnings.warn(f"study {study_name} declares no OPTIONS, so --option {', '.join(options)} cannot be checked "
                          "(a typo is ignored); declare them as OPTIONS = {name: mapflow.study.options.StudyOption}",
                          stacklevel=3)
        return
    for name, value in options.items():
        if name not in declared:
            near = difflib.get_close_matches(name, declared, n=1, cutoff=0.6)
            hint = f"did you mean '{near[0]}'? " if near else ""
            raise MapflowError(f"--option {name}: study {study_name} has no option '{name}'; {hint}its options: "
                               f"{', '.join(declared)} (see `mapflow studies`)")
        declared[name].check(name, str(value), study_name)
    missing = [name for name, option in declared.items() if option.required and name not in options]
    if missing:
        needed = declared[missing[0]]
        raise MapflowError(f"study {study_name} needs --option {missing[0]}=<{needed.expects or 'text'}>: "
                           f"{needed.help}")


def describe_options(study) -> list[str]:
    """Lines ``name=VALUES (default X): help`` for ``mapflow studies`` (the study's own options; common ones apart)."""
    declared = declared_options(study)
    if declared is None:
        return ["(declares no options)"]
    return [f"{name}={option.describe()}" for name, option in declared.items() if name not in COMMON_OPTION_NAMES]


def describe_common_options() -> list[str]:
    return [f"{name}={option.describe()}" for name, option in _common_options().items()]
