"""The check of a run's ``--option`` settings against what its study declares, before the store exists.

`COMMON_OPTION_NAMES` are the options every study takes (read by the analysis core). `check_study_options` refuses an
undeclared name (suggesting the nearest declared one) and a value its option cannot take (naming the allowed ones), so
a typo costs a refusal, not a store of silently ignored settings.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Mapping

from ..differences import default
from ..errors import MapflowError
from .declaration import declaration_of
from .options import StudyOption

# --- the options every study takes (read by `mapflow.analysis.clean` and `mapflow.analysis.knockouts`) ------------------


def _common_options() -> dict[str, StudyOption]:
    from ..knockout.screen import METRICS
    from .clean import CORRECTNESS_RULES

    return {
        "correct_by": StudyOption(
            "how a prediction counts as correct: the decoded text ignoring case (the released "
            "code) or the exact answer token",
            default("correct_by"),
            CORRECTNESS_RULES,
        ),
        "screen_metric": StudyOption(
            "the quantity the first-order screen (--plan screen) estimates", "logodds", METRICS
        ),
    }


COMMON_OPTION_NAMES = ("correct_by", "screen_metric")


def declared_options(study) -> dict[str, StudyOption] | None:
    """Every option ``study`` takes (its declared ``options`` and the common ones), or None when it declares none (a
    user's study without ``@mapflow.study(options=...)``: its names cannot be checked)."""
    own = declaration_of(study).options  # checked there: a mapping of names to StudyOption
    if own is None:
        return None
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
            warnings.warn(
                f"study {study_name} declares no options, so --option {', '.join(options)} cannot be checked "
                "(a typo is ignored); declare them with @mapflow.study(options={name: "
                "mapflow.analysis.options.StudyOption(...)})",
                stacklevel=3,
            )
        return
    for name, value in options.items():
        if name not in declared:
            near = difflib.get_close_matches(name, declared, n=1, cutoff=0.6)
            hint = f"did you mean '{near[0]}'? " if near else ""
            raise MapflowError(
                f"--option {name}: study {study_name} has no option '{name}'; {hint}its options: "
                f"{', '.join(declared)} (see `mapflow studies`)"
            )
        declared[name].check(name, str(value), study_name)
    missing = [name for name, option in declared.items() if option.required and name not in options]
    if missing:
        needed = declared[missing[0]]
        raise MapflowError(
            f"study {study_name} needs --option {missing[0]}=<{needed.expects or 'text'}>: {needed.help}"
        )


def describe_options(study) -> list[str]:
    """Lines ``name=VALUES (default X): help`` for ``mapflow studies`` (the study's own options; common ones apart)."""
    declared = declared_options(study)
    if declared is None:
        return ["(declares no options)"]
    return [f"{name}={option.describe()}" for name, option in declared.items() if name not in COMMON_OPTION_NAMES]


def describe_common_options() -> list[str]:
    return [f"{name}={option.describe()}" for name, option in _common_options().items()]
