"""How every typed artifact is read back: a JSON object, its format_version, its fields, or one line.

Each artifact module (data_dir, bundle, baseline_report, predictions) holds a frozen dataclass that is a
`Versioned` (to_dict, from_dict), its file names and its FORMAT_VERSION.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import ClassVar

from nextword import storage


def read_json(path: str, rerun: str, kind: type = dict):
    """The JSON object (or, with `kind` list, array) in `path`; `rerun` says which stage makes the file again,
    or what to remove."""
    try:
        data = json.loads(storage.read_text(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}); {rerun}") from None
    if not isinstance(data, kind):
        raise ValueError(f"{path}: expected a JSON {'object' if kind is dict else 'array'}; {rerun}")
    return data


def fields_of(cls: type, data: dict, source: str, version: int, rerun: str) -> dict:
    """The values of `cls`'s fields in `data`, written at format `version`; a field with a default may be absent.

    A newer format asks for a newer nextword, any other version or a missing field for the stage to be rerun.
    """
    found = data.get("format_version")
    if found != version:
        newer = isinstance(found, int) and not isinstance(found, bool) and found > version
        fix = "it was written by a newer nextword: upgrade nextword to read it" if newer else rerun
        raise ValueError(f"{source}: format_version {found!r}, this nextword reads {version}; {fix}")
    fields = dataclasses.fields(cls)
    missing = [
        f.name
        for f in fields
        if f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"{source}: missing {', '.join(missing)}; {rerun}")
    return {f.name: data[f.name] for f in fields if f.name in data}


def _fits(value, hint) -> bool:
    """Whether a value read from JSON has the field's type: an int is no bool, a float is finite (NaN and the
    infinities that Python's JSON reader accepts are not), every item of a list or dict has its type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint in (int, float, bool, str):
        number = isinstance(value, int) and not isinstance(value, bool)
        if hint is float:
            return (number or isinstance(value, float)) and math.isfinite(value)
        return number if hint is int else isinstance(value, hint)
    if origin is list or hint is list:
        return isinstance(value, list) and all(_fits(item, args[0]) for item in value if args)
    if origin is dict or hint is dict:
        return isinstance(value, dict) and all(
            _fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items() if args
        )
    if dataclasses.is_dataclass(hint):
        return isinstance(value, (dict, hint))  # built and checked by its own from_dict
    return True


def build(cls: type, data: dict, source: str, version: int, rerun: str):
    """An instance of the dataclass `cls` from `data` (see fields_of); a field typed as a dataclass (the text
    settings) is built with its own `from_dict`. A value of another type than its field's is one line."""
    values = fields_of(cls, data, source, version, rerun)
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if not _fits(value, hints[name]):
            raise ValueError(
                f"{source}: {name} is {json.dumps(value)[:60]}, not of type {_type_name(hints[name])}; {rerun}"
            )
    try:
        for name, value in values.items():
            if dataclasses.is_dataclass(hints[name]) and isinstance(value, dict):
                values[name] = hints[name].from_dict(value)
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: incomplete or invalid ({err}); {rerun}") from None


def _type_name(hint) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint)


class Versioned:
    """to_dict / from_dict for a frozen dataclass with a `format_version` field: READS is the version this
    nextword reads and writes, RERUN what makes the file again."""

    READS: ClassVar[int]
    RERUN: ClassVar[str]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str):
        return build(cls, data, source, cls.READS, cls.RERUN)
