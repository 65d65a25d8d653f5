"""The ``--option key=value`` settings a study declares (`StudyOption`) and parsers for their values.

A study declares its own options as ``@mapflow.study(options={"name": StudyOption(...)})``;
`mapflow.analysis.option_checks` refuses an undeclared name or a bad value before the store exists. Checks that need the
model (a layer count, a preset's depth) stay in the study's own ``check`` hook, ``@mapflow.study(check=fn)`` with
``fn(adapter, config, *, window_given)`` (`mapflow.analysis.run_checks.check_run_options`).

Values are strings, as ``--option`` gives them; a default is the text the study reads when the option is absent
(None: absent means "not set"). Defaults that `mapflow.differences` lists come from there (`default`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
                raise MapflowError(
                    f"--option {name}={value}: study {study} takes {name} = {self.expects or 'a valid value'} ({err})"
                ) from None

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


def existing_paths(text: str) -> list[Path]:
    paths = [Path(part.strip()).expanduser() for part in text.split(",") if part.strip()]
    missing = [str(p) for p in paths if not p.exists()]
    if not paths or missing:
        raise ValueError(f"no such store: {', '.join(missing) or '(none given)'}")
    return paths
