"""Typed job records: each job kind's config and result, stored as JSON with a schema version.

A kind declares its types beside its function: `@job_kind("finetune", config=FinetuneJob, result=FinetuneOutcome)`.
The queue parses a config once, when it is queued (`submit`), and hands the job function the typed config; pages,
the CLI, export and predict read attributes (`queue.config_of(job).backbone`), never raw keys, so renaming a field
is one checked change.

Every stored record carries `schema`. A record without one was written before versions (schema 0, releases up to
2026-12-01) and is read through its type's `migrate` steps, so a workspace from an older release opens and shows
its runs. A type is any class with `from_dict`, `to_dict` and `validate` (a `Record`, or `PretrainConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

from ..errors import PirlError

SCHEMA_KEY = "schema"


@dataclass
class Record:
    """A config or result: a dataclass whose fields are the stored keys. Unknown keys are refused by name."""

    SCHEMA: ClassVar[int] = 1

    @classmethod
    def migrate(cls, data: dict, version: int) -> dict:
        """`data` as written at schema `version`, brought to `version + 1`. Schema 0 -> 1: the fields a record
        lacks take their defaults (the only change so far)."""
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Record:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PirlError(f"Unknown {cls.__name__} field(s): {', '.join(unknown)}")
        record = cls(**data)
        record.validate()
        return record

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def validate(self) -> None:
        """Raise PirlError naming what is impossible; a type overrides it where something can be."""


def _plain(value: Any) -> Any:
    return value.to_dict() if hasattr(value, "to_dict") else value


def dump(record) -> dict:
    """What the database stores: the record's fields and its schema version."""
    return {SCHEMA_KEY: getattr(type(record), "SCHEMA", 1), **record.to_dict()}


def load(cls, data: dict | None):
    """A stored record as `cls`, migrated from the version it was written at."""
    data = dict(data or {})
    version = data.pop(SCHEMA_KEY, 0)
    current = getattr(cls, "SCHEMA", 1)
    if version > current:
        raise PirlError(f"This {cls.__name__} was written by a newer PIRL Studio (schema {version}; this one reads "
                        f"up to {current}). Update PIRL Studio to open it.")
    migrate = getattr(cls, "migrate", None)
    for v in range(version, current):
        data = migrate(data, v) if migrate else data
    return cls.from_dict(data)
