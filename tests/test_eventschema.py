"""Tests for monitor.eventschema: the shipped schemas are the built ones, and real events validate."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from monitor.events import EventType
from monitor.eventschema import FIELDS, event_schema
from tests.events_sample import life_events

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "docs" / "schemas"


def validator(kind: EventType) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{kind.value}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


@pytest.mark.parametrize("kind", list(EventType), ids=str)
def test_the_shipped_schema_is_the_one_the_code_builds(kind: EventType) -> None:
    """docs/schemas/<type>.schema.json equals event_schema(type): regenerate with python -m monitor.eventschema."""
    shipped = json.loads((SCHEMAS / f"{kind.value}.schema.json").read_text())
    assert shipped == event_schema(kind)


def test_every_schema_file_is_an_event_type() -> None:
    """No schema is shipped for a type the monitor does not emit."""
    assert sorted(p.name for p in SCHEMAS.glob("*.schema.json")) == sorted(
        f"{kind.value}.schema.json" for kind in EventType
    )


def test_real_events_of_every_type_validate_against_their_schema() -> None:
    """The tracker's events, as the sinks publish them, are valid against the schema of their type."""
    for event in life_events():
        errors = list(validator(event.type).iter_errors(event.to_json()))
        assert not errors, (event.type, [e.message for e in errors])


def test_a_schema_refuses_what_its_type_never_carries() -> None:
    """Schemas are strict: a missing required field, a foreign field or the wrong type const fail."""
    changed = next(e for e in life_events() if e.type is EventType.CHANGED).to_json()
    check = validator(EventType.CHANGED)
    assert not check.is_valid({k: v for k, v in changed.items() if k != "changes"})
    assert not check.is_valid({**changed, "surprise": 1})
    assert not check.is_valid({**changed, "type": "deployment.observed"})
    assert not check.is_valid({**changed, "event_id": "not-hex"})


def test_the_documented_examples_validate() -> None:
    """Every JSON example in docs/events.md is valid against the schema of its type."""
    text = (ROOT / "docs" / "events.md").read_text()
    examples = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.DOTALL)]
    typed = [example for example in examples if example.get("type") in set(EventType)]
    assert {example["type"] for example in typed} == set(EventType)
    for example in typed:
        errors = list(validator(EventType(example["type"])).iter_errors(example))
        assert not errors, (example["type"], [e.message for e in errors])


def test_every_field_is_described() -> None:
    """Each field a receiver may see says what it means."""
    assert all(schema.get("description") for schema in FIELDS.values())
