"""Tests for monitor.formats: native bodies unchanged, CloudEvents 1.0 structured mode as the SDK reads it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
from cloudevents.core.bindings.http import HTTPMessage, from_http
from cloudevents.core.formats.json import JSONFormat

from monitor.events import EventType
from monitor.formats import (
    CLOUDEVENT,
    EventFormat,
    Formatter,
    cloudevent_type,
    cloudevents_source,
)
from tests.events_sample import RID, life_events

ROOT = Path(__file__).resolve().parents[1]
CLOUD = Formatter(EventFormat.CLOUDEVENTS, cloudevents_source("https://acme.palantirfoundry.com"))


def test_the_native_format_is_the_event_json() -> None:
    """Native lines and bodies are the event's own JSON, one line each."""
    native = Formatter()
    for event in life_events():
        assert json.loads(native.line(event)) == event.to_json()
        assert native.line(event).count("\n") == 1
        assert json.loads(native.encoded(event)) == event.to_json()
    assert native.content_type() == "application/json"


def test_every_event_is_a_valid_structured_cloudevent() -> None:
    """The SDK's HTTP binding reads each body back with the attributes the mapping promises."""
    for event in life_events():
        message = HTTPMessage(headers={"content-type": CLOUD.content_type()}, body=CLOUD.encoded(event))
        parsed = from_http(message, JSONFormat())
        assert parsed.get_specversion() == "1.0"
        assert parsed.get_id() == event.event_id
        assert parsed.get_source() == "/foundry-monitor/acme.palantirfoundry.com"
        assert parsed.get_subject() == RID
        assert parsed.get_type() == cloudevent_type(event)
        assert parsed.get_datacontenttype() == "application/json"
        assert abs(parsed.get_time().timestamp() - event.time) < 0.001
        assert parsed.get_data() == event.to_json()


def test_types_are_versioned_and_named_after_the_event() -> None:
    """deployment.<kind> becomes com.palantir.foundry.live-deployment.<kind>.v1, one type per kind."""
    types = {event.type: cloudevent_type(event) for event in life_events()}
    assert types[EventType.CHANGED] == "com.palantir.foundry.live-deployment.changed.v1"
    assert types[EventType.NOT_FOUND] == "com.palantir.foundry.live-deployment.not_found.v1"
    assert len(set(types.values())) == len(EventType)


def test_the_documented_cloudevent_is_read_by_the_sdk_and_its_data_matches_its_schema() -> None:
    """The CloudEvents example in docs/events.md parses with the SDK; id is the data's event_id, and the
    data validates against the shipped schema its dataschema names."""
    text = (ROOT / "docs" / "events.md").read_text()
    blocks = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.DOTALL)]
    (example,) = [block for block in blocks if "specversion" in block]
    parsed = from_http(HTTPMessage({"content-type": CLOUDEVENT}, json.dumps(example).encode()), JSONFormat())
    data = parsed.get_data()
    assert parsed.get_id() == data["event_id"]
    assert parsed.get_subject() == data["rid"]
    schema = json.loads((ROOT / "docs" / "schemas" / f"{data['type']}.schema.json").read_text())
    assert parsed.get_dataschema() == schema["$id"]
    jsonschema.Draft202012Validator(schema).validate(data)
