"""How every typed artifact is read back: a JSON object, its format_version, its fields, or one line.

Each artifact module (data_dir, bundle, baseline_report, predictions) holds a frozen dataclass that is a
`Versioned` (to_dict, from_dict), its file names and its FORMAT_VERSION.
"""

from __future__ import annotations

import dataclasses
import json
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


def build(cls: type, data: dict, source: str, version: int, rerun: str):
    """An instance of the dataclass `cls` from `data` (see fields_of); a field typed as a dataclass (the text
    settings) is built with its own `from_dict`."""
    values = fields_of(cls, data, source, version, rerun)
    hints = typing.get_type_hints(cls)
    try:
        for name, value in values.items():
            if dataclasses.is_dataclass(hints[name]) and isinstance(value, dict):
                values[name] = hints[name].from_dict(value)
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: incomplete or invalid ({err}); {rerun}") from None


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
