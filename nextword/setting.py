"""A config key declared once: its default and its rules, on its dataclass field.

`setting(...)` makes the field; its `Rule` (in the field's metadata) holds the key's range, choices,
the folder it follows when left empty, and its roles. nextword/config.py checks every key by its rule
and derives from the roles the keys a resumed training run must keep (trainer/run_lock.py) and those
that change prediction records (batch_predict/resume.py). Rules across keys stay code, in config._check.
This module imports nothing of nextword's, so that the text contract can declare its keys here too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

METADATA_KEY = "nextword.rule"


@dataclass(frozen=True)
class Rule:
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # value > low (else >=)
    high_open: bool = False  # value < high (else <=)
    # Why the upper bound: a size that could exhaust a machine before any work shows it. Shown in the error.
    why: str = ""
    choices: tuple[str, ...] = ()
    # A folder left "" follows another key: <that key's value>/<under> (under "": the same folder).
    follows: str = ""
    under: str = ""
    # Roles: a resumed training run must keep this key's value; this key changes batch prediction's records.
    fixed_on_resume: bool = False
    changes_records: bool = False

    def problem(self, value: Any, optional: bool = False) -> str:
        """Why `value` breaks this rule, in words ("" when it does not); None passes (the type allows it)."""
        if value is None:
            return ""
        if self.choices and value not in self.choices:
            return f"{value!r} is not one of {', '.join(self.choices)}"
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.high_open else value <= self.high)
        if low_ok and high_ok:
            return ""
        or_null = " or null" if optional else ""
        if self.low is not None and self.high is not None and not self.why:
            interval = f"{'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"
            return f"must be in {interval}{or_null}, got {value!r}"
        if not low_ok:
            return f"must be {'>' if self.low_open else '>='} {self.low}{or_null}, got {value!r}"
        why = f" ({self.why})" if self.why else ""
        return f"must be {'<' if self.high_open else '<='} {self.high}{why}, got {value!r}"


def setting(
    default: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    why: str = "",
    choices: tuple[str, ...] = (),
    follows: str = "",
    under: str = "",
    fixed_on_resume: bool = False,
    changes_records: bool = False,
) -> Any:
    """A dataclass field with its rule; `default` a dataclass (a section) is made fresh for each instance."""
    rule = Rule(low, high, low_open, high_open, why, tuple(choices), follows, under, fixed_on_resume, changes_records)
    metadata = {METADATA_KEY: rule}
    if isinstance(default, type) and dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def rule_of(field: dataclasses.Field) -> Rule | None:
    return field.metadata.get(METADATA_KEY)
