"""Hypothesis strategies for snapshots, shared by the diff, tracker and exposition tests."""

from __future__ import annotations

from hypothesis import strategies as st

from monitor.model import (
    KNOWN_STATES,
    Delay,
    Gpu,
    LiveDeployment,
    RuntimeConfiguration,
    ScalingConfiguration,
)

RID = "ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-000000000001"
_names = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ_", min_size=1, max_size=8)
_rids = st.sampled_from(
    [f"ri.models.main.model-version.{i:08d}-0000-4000-8000-000000000000" for i in range(4)]
)
_delays = st.builds(Delay, st.integers(0, 100), st.sampled_from(["SECONDS", "MINUTES"]))
_scaling = st.builds(
    ScalingConfiguration,
    st.none() | st.floats(0, 1, allow_nan=False),
    st.none() | _delays,
    st.none() | _delays,
)
_memory = st.sampled_from([(None, None), ("256MiB", 268435456), ("1Gi", 1073741824), ("2G", 2000000000)])


@st.composite
def runtimes(draw: st.DrawFn) -> RuntimeConfiguration:
    memory, memory_bytes = draw(_memory)
    env = draw(st.none() | st.dictionaries(_names, st.sampled_from(["hmac-sha256:aa", "hmac-sha256:bb"])))
    return RuntimeConfiguration(
        min_replicas=draw(st.integers(0, 5)),
        max_replicas=draw(st.integers(0, 10)),
        cpu=draw(st.none() | st.sampled_from([0.5, 1.0, 2.0])),
        memory=memory,
        memory_bytes=memory_bytes,
        gpu=draw(st.none() | st.builds(Gpu, st.integers(0, 4), st.none() | st.sampled_from(["A10G", "T4"]))),
        thread_count=draw(st.none() | st.integers(1, 64)),
        scaling=draw(st.none() | _scaling),
        sources=draw(st.none() | st.lists(_rids, max_size=3, unique=True).map(lambda s: tuple(sorted(s)))),
        environment=None if env is None else tuple(sorted(env.items())),
    )


snapshots = st.builds(
    LiveDeployment,
    rid=st.just(RID),
    model_rid=st.just("ri.models.main.model.00000000-0000-4000-8000-000000000000"),
    model_version_rid=_rids,
    runtime=runtimes(),
    state=st.sampled_from([*KNOWN_STATES, "HIBERNATING"]),
    is_ready=st.booleans(),
    branch=st.none() | st.sampled_from(["master", "develop"]),
)
