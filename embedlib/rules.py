"""What a valid value of a setting is: one rule per kind, with the Python error and the command
line's reading of text made from the same test.

``check(name, value)`` raises a one-line ``ConfigError`` ("batch_size must be
a whole number >= 1, got 0"); ``parse(text)`` reads a value from the command
line or the environment, and ``from_text`` (an argparse ``type``) does both
in the command line's words ("expected a whole number >= 1, got 0").
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from embedlib.errors import ConfigError


class Rule(Protocol):
    @property
    def what(self) -> str:  # "a whole number >= 1"
        ...

    def accepts(self, value: Any) -> bool: ...

    def check(self, name: str, value: Any) -> None: ...

    def parse(self, text: str) -> Any: ...

    def from_text(self, text: str) -> Any: ...


class _Plain:
    """A rule is a test of a value (``accepts``) and a reading of text (``parse``); the rest follows."""

    what = "a value"

    def accepts(self, value: Any) -> bool:
        return True

    def parse(self, text: str) -> Any:
        return text

    def check(self, name: str, value: Any) -> None:
        if not self.accepts(value):
            raise ConfigError(f"{name} must be {self.what}, got {value!r}", option=name)

    def from_text(self, text: str) -> Any:
        try:
            value = self.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if not self.accepts(value):
            raise argparse.ArgumentTypeError(f"expected {self.what}, got {text!r}")
        return value


@dataclass(frozen=True)
class Whole(_Plain):
    at_least: int = 1

    @property
    def what(self) -> str:  # type: ignore[override]  # a class attribute in the base, computed here
        return f"a whole number >= {self.at_least}"

    def accepts(self, value: Any) -> bool:
        return not isinstance(value, bool) and isinstance(value, int) and value >= self.at_least

    def parse(self, text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"expected a whole number, got {text!r}") from None


def is_amount(value: object) -> bool:
    """Whether ``value`` is a finite number >= 0 (seconds, milliseconds): not a bool, NaN or infinity.

    NaN compares false with everything, so a plain ``< 0`` test lets it
    through, and a timeout of NaN or infinity never runs out.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return value >= 0 if isinstance(value, int) else math.isfinite(value) and value >= 0


@dataclass(frozen=True)
class Amount(_Plain):
    """A finite number of ``unit`` >= 0."""

    unit: str

    @property
    def what(self) -> str:  # type: ignore[override]
        return f"a finite number of {self.unit} >= 0"

    def accepts(self, value: Any) -> bool:
        return is_amount(value)

    def parse(self, text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"expected a number of {self.unit}, got {text!r}") from None


class Name(_Plain):
    """A non-empty name: of a table, a column, an executor."""

    what = "a non-empty name"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and bool(value)


class Text(_Plain):
    """Any string: a DSN, an address."""

    what = "text"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str)


class Anything(_Plain):
    """Checked where it is used (a model: a name, a path, a URL or an encoder object)."""


class Flag(_Plain):
    what = "True or False"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)


class Device(_Plain):
    """Where a model runs: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` (a GPU by number) or ``mps``."""

    what = "auto, cpu, cuda, cuda:N or mps"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and (
            value in ("auto", "cpu", "cuda", "mps") or bool(re.fullmatch(r"cuda:\d+", value))
        )

    def check(self, name: str, value: Any) -> None:
        if not self.accepts(value):
            raise ConfigError(f"unknown device {value!r} (choose from: {self.what})", option=name)


@dataclass(frozen=True)
class Choice(_Plain):
    choices: Sequence[str]
    noun: str  # what a choice is: "metric", "index method"

    @property
    def what(self) -> str:  # type: ignore[override]
        return f"one of {', '.join(self.choices)}"

    def accepts(self, value: Any) -> bool:
        return value in self.choices

    def check(self, name: str, value: Any) -> None:
        if value not in self.choices:
            raise ConfigError(f"unknown {self.noun} {value!r} (choose from: {', '.join(self.choices)})", option=name)
