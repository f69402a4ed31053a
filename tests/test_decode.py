"""Tests for monitor.decode: the shared example payloads, tolerance, strictness, and hostile bodies."""

from __future__ import annotations

import contextlib
import copy
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.decode import Decoder, parse_json, parse_rfc3339
from monitor.errors import BadResponse, NotJson, WrongShape
from monitor.model import (
    Delay,
    Gpu,
    LiveDeployment,
    ModelVersion,
    ModelVersionSource,
    ScalingConfiguration,
    compared_fields,
    snapshot_to_json,
)
from tests.conftest import API_EXAMPLES_DIR

SECRET_VALUE = "secret-value-never-log-me"
KEY = b"k" * 32
DOCS_RID = "ri.foundry-ml-live.main.live-deployment.f351c142-0e4c-4b12-adc2-6e1539737ae9"
FULL_RID = "ri.foundry-ml-live.main.live-deployment.0b6c1a52-9d7e-4f0a-8a51-2f4cbb0d7e11"


def example(api_examples_dir: Path, name: str) -> Any:
    return json.loads((api_examples_dir / name).read_bytes())


@pytest.fixture
def docs_payload(api_examples_dir: Path) -> dict[str, Any]:
    payload: dict[str, Any] = example(api_examples_dir, "get-live-deployment.docs.json")
    return payload


@pytest.fixture
def full_payload(api_examples_dir: Path) -> dict[str, Any]:
    payload: dict[str, Any] = example(api_examples_dir, "get-live-deployment.full.json")
    return payload


def decode(payload: Any, decoder: Decoder | None = None) -> LiveDeployment:
    return (decoder or Decoder(KEY)).live_deployment(json.dumps(payload).encode())


def test_docs_example_decodes_without_sources_or_environment(api_examples_dir: Path) -> None:
    """Palantir's documentation example decodes; its missing sources and env vars are None, not empty."""
    body = (api_examples_dir / "get-live-deployment.docs.json").read_bytes()
    snapshot = Decoder(KEY).live_deployment(body, expected_rid=DOCS_RID)
    assert snapshot.rid == DOCS_RID
    assert snapshot.model_rid == "ri.models.main.model.f351c142-0e4c-4b12-adc2-6e1539737ae9"
    assert snapshot.model_version_rid == "ri.models.main.model-version.adf94926-c3ac-41ea-beb2-4946699d08ee"
    assert snapshot.branch == "master"
    assert (snapshot.state, snapshot.is_ready, snapshot.state_label) == ("ACTIVE", True, "ACTIVE")
    runtime = snapshot.runtime
    assert (runtime.min_replicas, runtime.max_replicas, runtime.cpu) == (1, 3, 1.0)
    assert (runtime.memory, runtime.memory_bytes, runtime.thread_count) == ("256MiB", 256 << 20, 32)
    assert runtime.gpu is None
    assert runtime.scaling is None
    assert runtime.sources is None
    assert runtime.environment is None


def test_full_example_decodes_every_part(api_examples_dir: Path) -> None:
    """The newest shape: GPU, scaling, sources and environment variable names with digests."""
    body = (api_examples_dir / "get-live-deployment.full.json").read_bytes()
    decoder = Decoder(KEY)
    snapshot = decoder.live_deployment(body, expected_rid=FULL_RID)
    runtime = snapshot.runtime
    assert snapshot.branch is None
    assert (snapshot.state, snapshot.is_ready) == ("ACTIVE", False)
    assert (runtime.min_replicas, runtime.max_replicas, runtime.cpu) == (0, 4, 2.5)
    assert (runtime.memory, runtime.memory_bytes, runtime.thread_count) == ("1GiB", 1 << 30, 16)
    assert runtime.gpu == Gpu(1, "A10G")
    assert runtime.scaling == ScalingConfiguration(0.75, Delay(30, "SECONDS"), Delay(10, "MINUTES"))
    assert runtime.sources == ("ri.magritte..source.6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b",)
    assert runtime.environment == (
        ("LOG_LEVEL", decoder.digest("INFO")),
        ("UPSTREAM_API_KEY", decoder.digest(SECRET_VALUE)),
    )


def test_environment_values_are_kept_nowhere(api_examples_dir: Path) -> None:
    """Neither the secret value nor the harmless one is in the snapshot's repr, flat view or JSON form."""
    body = (api_examples_dir / "get-live-deployment.full.json").read_bytes()
    snapshot = Decoder(KEY).live_deployment(body)
    for rendered in (
        repr(snapshot),
        str(snapshot),
        repr(compared_fields(snapshot)),
        json.dumps(snapshot_to_json(snapshot)),
    ):
        assert SECRET_VALUE not in rendered
        assert '"INFO"' not in rendered
        assert "'INFO'" not in rendered
        assert "UPSTREAM_API_KEY" in rendered


def test_list_example_decodes(api_examples_dir: Path) -> None:
    """The list endpoint's ``{"data": [...]}`` decodes item by item; empty sources and env vars stay empty."""
    body = (api_examples_dir / "list-live-deployments.json").read_bytes()
    (snapshot,) = Decoder(KEY).live_deployment_list(body)
    assert snapshot.rid == DOCS_RID
    assert (snapshot.state, snapshot.is_ready, snapshot.state_label) == ("STARTING", False, "STARTING")
    assert snapshot.runtime.cpu == 1.0
    assert snapshot.runtime.sources == ()
    assert snapshot.runtime.environment == ()


def test_error_examples_are_not_deployments(api_examples_dir: Path) -> None:
    """An error envelope served with 200 is the wrong shape, not a snapshot."""
    for name in ("error-not-found.json", "error-unsupported.json"):
        with pytest.raises(WrongShape):
            Decoder(KEY).live_deployment((api_examples_dir / name).read_bytes())


def test_every_example_file_is_covered(api_examples_dir: Path) -> None:
    """If a new example appears in tests/fixtures/api, this test asks for it to be covered above."""
    assert sorted(p.name for p in api_examples_dir.glob("*.json")) == [
        "error-not-found.json",
        "error-unsupported.json",
        "get-live-deployment.docs.json",
        "get-live-deployment.full.json",
        "list-live-deployments.json",
        "list-model-versions.json",
    ]


def test_a_model_version_list_is_not_a_deployment_list(api_examples_dir: Path) -> None:
    """A model-version listing (same ``{"data": [...]}`` envelope) is the wrong shape for live deployments."""
    with pytest.raises(WrongShape):
        Decoder(KEY).live_deployment_list((api_examples_dir / "list-model-versions.json").read_bytes())


def test_unknown_fields_are_ignored(docs_payload: dict[str, Any]) -> None:
    """New fields at any level do not change the snapshot."""
    extended = copy.deepcopy(docs_payload)
    extended["newTopLevel"] = {"x": [1, 2]}
    extended["runtimeConfiguration"]["newKnob"] = True
    extended["status"]["message"] = "hello"
    extended["modelVersion"]["extra"] = None
    assert decode(extended) == decode(docs_payload)


def test_unknown_state_is_kept_and_labelled_unknown(docs_payload: dict[str, Any]) -> None:
    """A state the SDK would reject is kept as sent and reported as UNKNOWN."""
    docs_payload["status"]["state"] = "HIBERNATING"
    snapshot = decode(docs_payload)
    assert snapshot.state == "HIBERNATING"
    assert snapshot.state_label == "UNKNOWN"
    assert not snapshot.state_known


def test_cpu_1_and_1_0_compare_equal(docs_payload: dict[str, Any]) -> None:
    """``"cpu": 1`` and ``"cpu": 1.0`` give equal compared fields (the JSON text differs)."""
    as_float = copy.deepcopy(docs_payload)
    as_float["runtimeConfiguration"]["cpu"] = 1.0
    int_body = json.dumps(docs_payload).encode()
    float_body = json.dumps(as_float).encode()
    assert b'"cpu": 1,' in int_body
    assert b'"cpu": 1.0,' in float_body
    decoder = Decoder(KEY)
    a, b = decoder.live_deployment(int_body), decoder.live_deployment(float_body)
    assert compared_fields(a) == compared_fields(b)
    assert isinstance(compared_fields(a)["runtimeConfiguration.cpu"], float)


def test_env_digest_changes_iff_the_value_changes(full_payload: dict[str, Any]) -> None:
    """Same value, same digest; a changed value changes that variable's digest and no other."""
    decoder = Decoder(KEY)
    before = compared_fields(decode(full_payload, decoder))
    again = compared_fields(decode(copy.deepcopy(full_payload), decoder))
    full_payload["runtimeConfiguration"]["environmentVariables"]["UPSTREAM_API_KEY"] = SECRET_VALUE + "2"
    after = compared_fields(decode(full_payload, decoder))
    path = "runtimeConfiguration.environmentVariables."
    assert before == again
    assert before[path + "UPSTREAM_API_KEY"] != after[path + "UPSTREAM_API_KEY"]
    assert before[path + "LOG_LEVEL"] == after[path + "LOG_LEVEL"]
    assert {k for k in before if before[k] != after[k]} == {path + "UPSTREAM_API_KEY"}


def test_digest_is_keyed() -> None:
    """The digest depends on the key, so a low-entropy value cannot be found by hashing guesses."""
    assert Decoder(b"a" * 32).digest("hunter2") == Decoder(b"a" * 32).digest("hunter2")
    assert Decoder(b"a" * 32).digest("hunter2") != Decoder(b"b" * 32).digest("hunter2")
    assert Decoder(b"a" * 32).digest("hunter2").startswith("hmac-sha256:")
    assert Decoder(b"a" * 32).digest("\ud800")  # a lone surrogate from JSON does not crash


def test_answer_about_another_rid_is_rejected(api_examples_dir: Path) -> None:
    """With expected_rid, a body describing a different deployment is WrongShape at path ``rid``."""
    body = (api_examples_dir / "get-live-deployment.docs.json").read_bytes()
    with pytest.raises(WrongShape) as caught:
        Decoder(KEY).live_deployment(body, expected_rid=FULL_RID)
    assert caught.value.path == "rid"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html><body>502 Bad Gateway</body></html>",
        b'{"rid": "ri.',
        b"\xff\xfe\x00",
        b"NaN",
        b'{"a": Infinity}',
        b"[" * 100_000,
    ],
)
def test_non_json_bodies_are_not_json(body: bytes) -> None:
    """Empty, HTML, truncated, undecodable, NaN/Infinity and absurdly nested bodies are NotJson."""
    with pytest.raises(NotJson):
        parse_json(body)
    with pytest.raises(NotJson):
        Decoder(KEY).live_deployment(body)


def test_not_json_message_holds_no_body_text() -> None:
    """NotJson names the parser's error class only, never a slice of the body."""
    with pytest.raises(NotJson) as caught:
        parse_json(b'{"access_token": "abc')
    assert "abc" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def _set(payload: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(payload)
    *parents, last = path.split(".")
    node = changed
    for part in parents:
        node = node[part]
    if value is _DROP:
        del node[last]
    else:
        node[last] = value
    return changed


_DROP = object()


@pytest.mark.parametrize(
    ("path", "value", "error_path"),
    [
        ("rid", _DROP, "rid"),
        ("rid", 5, "rid"),
        ("modelVersion", _DROP, "modelVersion"),
        ("modelVersion", [], "modelVersion"),
        ("modelVersion.modelRid", None, "modelVersion.modelRid"),
        ("modelVersion.modelVersionRid", _DROP, "modelVersion.modelVersionRid"),
        ("branch", 3, "branch"),
        ("runtimeConfiguration", "x", "runtimeConfiguration"),
        ("runtimeConfiguration.minReplicas", _DROP, "runtimeConfiguration.minReplicas"),
        ("runtimeConfiguration.minReplicas", True, "runtimeConfiguration.minReplicas"),
        ("runtimeConfiguration.maxReplicas", 1.5, "runtimeConfiguration.maxReplicas"),
        ("runtimeConfiguration.cpu", "1", "runtimeConfiguration.cpu"),
        ("runtimeConfiguration.cpu", False, "runtimeConfiguration.cpu"),
        ("runtimeConfiguration.cpu", 10**400, "runtimeConfiguration.cpu"),
        ("runtimeConfiguration.memory", 256, "runtimeConfiguration.memory"),
        ("runtimeConfiguration.threadCount", "32", "runtimeConfiguration.threadCount"),
        ("runtimeConfiguration.gpu", 1, "runtimeConfiguration.gpu"),
        ("runtimeConfiguration.gpu", {"type": "T4"}, "runtimeConfiguration.gpu.count"),
        ("runtimeConfiguration.gpu", {"count": 1, "type": 7}, "runtimeConfiguration.gpu.type"),
        ("runtimeConfiguration.scalingConfiguration", [], "runtimeConfiguration.scalingConfiguration"),
        (
            "runtimeConfiguration.scalingConfiguration",
            {"scaleUpDelay": {"unit": "SECONDS"}},
            "runtimeConfiguration.scalingConfiguration.scaleUpDelay.value",
        ),
        (
            "runtimeConfiguration.scalingConfiguration",
            {"scaleUpLoadThreshold": "high"},
            "runtimeConfiguration.scalingConfiguration.scaleUpLoadThreshold",
        ),
        ("runtimeConfiguration.sources", "ri.a..b.c", "runtimeConfiguration.sources"),
        ("runtimeConfiguration.sources", ["ri.a..b.c", 1], "runtimeConfiguration.sources"),
        ("runtimeConfiguration.environmentVariables", ["A"], "runtimeConfiguration.environmentVariables"),
        ("status", _DROP, "status"),
        ("status.state", _DROP, "status.state"),
        ("status.isReady", "true", "status.isReady"),
        ("status.isReady", 1, "status.isReady"),
    ],
)
def test_missing_or_mistyped_fields_are_wrong_shape(
    docs_payload: dict[str, Any], path: str, value: Any, error_path: str
) -> None:
    """Each required field missing and each field of the wrong type is WrongShape naming that field."""
    with pytest.raises(WrongShape) as caught:
        decode(_set(docs_payload, path, value))
    assert caught.value.path == error_path
    assert error_path in caught.value.message


@pytest.mark.parametrize(
    "path",
    ["branch", "runtimeConfiguration.cpu", "runtimeConfiguration.memory", "runtimeConfiguration.threadCount"],
)
def test_optional_fields_may_be_null(docs_payload: dict[str, Any], path: str) -> None:
    """An optional field sent as null reads as absent."""
    assert decode(_set(docs_payload, path, None)) == decode(_set(docs_payload, path, _DROP))


def test_unparseable_memory_is_kept_as_text(docs_payload: dict[str, Any]) -> None:
    """A memory quantity we cannot parse is kept as sent, with no byte count."""
    snapshot = decode(_set(docs_payload, "runtimeConfiguration.memory", "lots"))
    assert (snapshot.runtime.memory, snapshot.runtime.memory_bytes) == ("lots", None)


def test_a_mistyped_env_value_is_named_but_not_shown(full_payload: dict[str, Any]) -> None:
    """A non-string variable value is WrongShape naming the variable; the value is not in the message."""
    full_payload["runtimeConfiguration"]["environmentVariables"]["UPSTREAM_API_KEY"] = 918273645
    with pytest.raises(WrongShape) as caught:
        decode(full_payload)
    assert caught.value.path == "runtimeConfiguration.environmentVariables.UPSTREAM_API_KEY"
    assert "918273645" not in str(caught.value)
    assert "918273645" not in repr(caught.value)


def test_list_errors_name_the_item(docs_payload: dict[str, Any]) -> None:
    """A bad item in a list names its index; a list body without ``data`` is WrongShape at ``data``."""
    bad = _set(docs_payload, "status.isReady", None)
    with pytest.raises(WrongShape) as caught:
        Decoder(KEY).live_deployment_list(json.dumps({"data": [docs_payload, bad]}))
    assert caught.value.path == "data[1].status.isReady"
    assert caught.value.__cause__ is None
    for body in ("{}", '{"data": {}}', "[]", '{"data": null}'):
        with pytest.raises(WrongShape):
            Decoder(KEY).live_deployment_list(body)
    assert Decoder(KEY).live_deployment_list('{"data": []}') == ()


def test_sources_are_sorted(docs_payload: dict[str, Any]) -> None:
    """Sources compare as a set: order on the wire does not matter."""
    a = decode(_set(docs_payload, "runtimeConfiguration.sources", ["ri.b..c.2", "ri.a..c.1"]))
    b = decode(_set(docs_payload, "runtimeConfiguration.sources", ["ri.a..c.1", "ri.b..c.2"]))
    assert a.runtime.sources == ("ri.a..c.1", "ri.b..c.2")
    assert a == b


# --- properties: whatever the body, a snapshot or a BadResponse ---------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_any_json_value_gives_only_bad_response(value: Any) -> None:
    """Arbitrary JSON (NaN and Infinity included) thrown at both decoders raises only NotJson or WrongShape."""
    body = json.dumps(value).encode()
    decoder = Decoder(KEY)
    for decode_body in (decoder.live_deployment, decoder.live_deployment_list):
        with contextlib.suppress(NotJson, WrongShape):
            decode_body(body)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_any_bytes_give_only_bad_response(body: bytes) -> None:
    """Arbitrary bytes raise only NotJson or WrongShape from either decoder."""
    decoder = Decoder(KEY)
    for decode_body in (decoder.live_deployment, decoder.live_deployment_list):
        with contextlib.suppress(NotJson, WrongShape):
            decode_body(body)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found: list[tuple[Any, ...]] = []
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        found.append((*prefix, key))
        found.extend(_paths(child, (*prefix, key)))
    return found


@st.composite
def mutated_payloads(draw: st.DrawFn, payload: dict[str, Any]) -> dict[str, Any]:
    changed = copy.deepcopy(payload)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(changed)
        if not paths:
            break
        *parents, last = draw(st.sampled_from(paths))
        node = changed
        for part in parents:
            node = node[part]
        if draw(st.booleans()):
            del node[last]
        else:
            node[last] = draw(json_values)
    return changed


def _full_example() -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((API_EXAMPLES_DIR / "get-live-deployment.full.json").read_bytes())
    return payload


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_payloads(_full_example()))
def test_a_mutated_payload_gives_a_snapshot_or_bad_response(payload: dict[str, Any]) -> None:
    """Dropping or replacing random fields of the full example gives a snapshot or a BadResponse, and a
    snapshot still holds no environment variable value."""
    outcome: LiveDeployment | BadResponse
    try:
        outcome = Decoder(KEY).live_deployment(json.dumps(payload).encode())
    except BadResponse as exc:
        outcome = exc
    if isinstance(outcome, BadResponse):
        assert isinstance(outcome, NotJson | WrongShape)
        assert SECRET_VALUE not in str(outcome)
    else:
        assert SECRET_VALUE not in repr(outcome)
        assert SECRET_VALUE not in json.dumps(snapshot_to_json(outcome))


# --- model versions ------------------------------------------------------------------------------------

VERSION_RID = "ri.models.main.model-version.adf94926-c3ac-41ea-beb2-4946699d08ee"


def versions_payload(api_examples_dir: Path) -> dict[str, Any]:
    payload: dict[str, Any] = example(api_examples_dir, "list-model-versions.json")
    return payload


def decode_page(payload: Any) -> tuple[tuple[ModelVersion, ...], str | None]:
    return Decoder(KEY).model_version_page(json.dumps(payload).encode())


def test_model_version_example_decodes(api_examples_dir: Path) -> None:
    """The shared version listing decodes to its two versions (RID, createdTime as a Unix timestamp, source)
    and its next page token; modelApi, condaRequirements and the other fields are not kept."""
    versions, token = Decoder(KEY).model_version_page(
        (api_examples_dir / "list-model-versions.json").read_bytes()
    )
    assert token == "v1.2"
    first, second = versions
    assert first.rid == VERSION_RID
    assert first.created_time == pytest.approx(datetime(2026, 11, 20, 9, 14, 3, 512000, UTC).timestamp())
    assert second.created_time == pytest.approx(datetime(2026, 11, 27, 16, 40, 55, 7000, UTC).timestamp())
    repository = "ri.stemma.main.repository.2d3c4b5a-6f7e-4d8c-9b0a-1f2e3d4c5b6a"
    assert first.source == ModelVersionSource(
        type="codeRepository", branch="master", repository_rid=repository
    )
    assert not hasattr(first, "__dict__")


def test_last_page_and_optional_parts(api_examples_dir: Path) -> None:
    """No nextPageToken (or null) is the last page; a version without source, and a source without branch
    or repository, decode; unknown fields at every level are ignored."""
    payload = versions_payload(api_examples_dir)
    del payload["nextPageToken"]
    payload["unknownTop"] = {"x": 1}
    payload["data"][0].pop("source")
    payload["data"][0]["linkedExperiment"] = "ri.models.main.experiment.1"
    payload["data"][1]["source"] = {"type": "external", "somethingNew": [1]}
    (first, second), token = decode_page(payload)
    assert token is None
    assert first.source is None
    assert second.source == ModelVersionSource(type="external")
    payload["nextPageToken"] = None
    assert decode_page(payload)[1] is None
    assert decode_page({"data": []}) == ((), None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-20T09:14:03Z", datetime(2026, 11, 20, 9, 14, 3, tzinfo=UTC)),
        ("2026-11-20t09:14:03.5z", datetime(2026, 11, 20, 9, 14, 3, 500000, tzinfo=UTC)),
        ("2026-11-20 10:14:03+01:00", datetime(2026, 11, 20, 9, 14, 3, tzinfo=UTC)),
        ("2026-11-20T04:44:03-04:30", datetime(2026, 11, 20, 9, 14, 3, tzinfo=UTC)),
        ("2016-12-31T23:59:60Z", datetime(2017, 1, 1, tzinfo=UTC)),
    ],
)
def test_rfc3339_timestamps(text: str, expected: datetime) -> None:
    """RFC 3339 date-times in every offset form parse to the same instant; a leap second is the next one."""
    assert parse_rfc3339(text) == pytest.approx(expected.timestamp())


def test_rfc3339_keeps_sub_microsecond_digits_as_a_fraction() -> None:
    """A nanosecond fraction (as Java servers send) is read, not refused, to within a microsecond."""
    parsed = parse_rfc3339("2026-11-20T09:14:03.123456789Z")
    assert parsed == pytest.approx(datetime(2026, 11, 20, 9, 14, 3, 123457, UTC).timestamp(), abs=1e-6)


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-20",
        "2026-11-20T09:14:03",
        "20261120T091403Z",
        "2026-W47-5T09:14:03Z",
        "2026-04-31T00:00:00Z",
        "2026-11-20T24:00:00Z",
        "2026-11-20T09:14:03+24:00",
        "2026-11-20T09:14:03Z\n",
        " 2026-11-20T09:14:03Z",
        "2026-11-20T09:14:03.Z",
        "\uff12026-11-20T09:14:03Z",
        "",
    ],
)
def test_what_is_not_rfc3339_is_refused(text: str) -> None:
    """Dates without a time or an offset, impossible dates and offsets, and padded text are not timestamps."""
    assert parse_rfc3339(text) is None


VERSION_SHAPES = [
    ("data", None, "data"),
    ("data", {"rid": "x"}, "data"),
    ("nextPageToken", 12, "nextPageToken"),
    ("nextPageToken", "", "nextPageToken"),
    ("nextPageToken", "t" * 2049, "nextPageToken"),
    ("data.0", ["not", "an", "object"], "data[0].$"),
    ("data.0.rid", None, "data[0].rid"),
    ("data.0.rid", 7, "data[0].rid"),
    ("data.0.rid", "not-a-rid", "data[0].rid"),
    ("data.0.createdTime", None, "data[0].createdTime"),
    ("data.0.createdTime", 1795166043.5, "data[0].createdTime"),
    ("data.0.createdTime", "2026-11-20", "data[0].createdTime"),
    ("data.1.source", "codeRepository", "data[1].source"),
    ("data.1.source.type", None, "data[1].source.type"),
    ("data.1.source.branch", ["master"], "data[1].source.branch"),
    ("data.1.source.repositoryRid", 3, "data[1].source.repositoryRid"),
]


@pytest.mark.parametrize(
    ("path", "value", "named"), VERSION_SHAPES, ids=[f"{p}={v!r}"[:40] for p, v, _ in VERSION_SHAPES]
)
def test_version_page_wrong_shapes(api_examples_dir: Path, path: str, value: Any, named: str) -> None:
    """A missing or mistyped part of a version page is WrongShape naming the part; the 2,048-character
    token limit and the RID pattern are part of the shape."""
    payload = versions_payload(api_examples_dir)
    *parents, last = path.split(".")
    node: Any = payload
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if value is None and isinstance(node, dict):
        del node[key]
    else:
        node[key] = value
    with pytest.raises(WrongShape) as caught:
        decode_page(payload)
    assert caught.value.path == named


def test_a_token_of_the_longest_length_is_kept(api_examples_dir: Path) -> None:
    """The token limit is inclusive: 2,048 characters is still a token."""
    payload = versions_payload(api_examples_dir)
    payload["nextPageToken"] = "t" * 2048
    assert decode_page(payload)[1] == "t" * 2048


def test_a_deployment_list_is_not_a_version_page(api_examples_dir: Path) -> None:
    """Live deployments in a ``{"data": [...]}`` envelope are the wrong shape for a version page."""
    with pytest.raises(WrongShape):
        Decoder(KEY).model_version_page((api_examples_dir / "list-live-deployments.json").read_bytes())


def test_a_version_page_over_the_item_bound_is_refused() -> None:
    """More than 10,000 versions on one page is refused before any is decoded."""
    with pytest.raises(WrongShape) as caught:
        Decoder(KEY).model_version_page(json.dumps({"data": [None] * 10_001}).encode())
    assert caught.value.path == "data"


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_any_json_value_gives_a_version_page_or_bad_response(value: Any) -> None:
    """Arbitrary JSON thrown at the version page decoder raises only NotJson or WrongShape."""
    with contextlib.suppress(NotJson, WrongShape):
        Decoder(KEY).model_version_page(json.dumps(value).encode())


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_payloads(json.loads((API_EXAMPLES_DIR / "list-model-versions.json").read_bytes())))
def test_a_mutated_version_page_gives_a_page_or_bad_response(payload: dict[str, Any]) -> None:
    """Dropping or replacing random parts of the version example gives a page or a BadResponse, never
    another exception; a page's timestamps are finite numbers."""
    outcome: tuple[tuple[ModelVersion, ...], str | None] | BadResponse
    try:
        outcome = decode_page(payload)
    except BadResponse as exc:
        outcome = exc
    if isinstance(outcome, BadResponse):
        assert isinstance(outcome, NotJson | WrongShape)
    else:
        assert all(math.isfinite(version.created_time) for version in outcome[0])
