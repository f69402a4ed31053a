"""Tests for the kustomize overlay ``sharded`` (deploy/kubernetes/overlays/sharded): static shards in a
StatefulSet, checked offline as the base and the example overlay are (tests/test_deploy.py).

The overlay is built here the way kustomize builds it, as far as it uses kustomize: the base's resources
and its own, the Deployment deleted, the Service patched, the image tag and the ConfigMap replaced. Where
kubectl is installed, its own rendering is compared with that.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.partition import Shard
from tests.deploy_tools import load_yaml, require_module, run, strategic_merge

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES = ROOT / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
SHARDED = KUBERNETES / "overlays" / "sharded"
K8S_VERSION = "1.31"
PORT = 9708
_BASE_DIR = "../../base"


def _generated_config_map(directory: Path) -> dict[str, Any]:
    (generator,) = load_yaml(directory / "kustomization.yaml")["configMapGenerator"]
    data = {Path(name).name: (directory / name).read_text(encoding="utf-8") for name in generator["files"]}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data}


def _key(document: dict[str, Any]) -> tuple[str, str]:
    return document["kind"], document["metadata"]["name"]


def build() -> dict[tuple[str, str], dict[str, Any]]:
    """The overlay's documents by (kind, name), as ``kubectl kustomize`` makes them (namespace and the
    ConfigMap's hash suffix left out)."""
    overlay = load_yaml(SHARDED / "kustomization.yaml")
    base = load_yaml(BASE / "kustomization.yaml")
    assert overlay["resources"][0] == _BASE_DIR
    documents = [load_yaml(BASE / name) for name in base["resources"]]
    documents += [load_yaml(SHARDED / name) for name in overlay["resources"][1:]]
    documents.append(_generated_config_map(SHARDED))
    built = {_key(document): document for document in documents}
    for patch in overlay["patches"]:
        document = load_yaml(SHARDED / patch["path"])
        target = (patch["target"]["kind"], patch["target"]["name"])
        assert _key(document) == target
        if document.get("$patch") == "delete":
            del built[target]
        else:
            built[target] = strategic_merge(built[target], document)
    tags = {image["name"]: image["newTag"] for image in overlay["images"]}
    workloads = [document for document in built.values() if "template" in document.get("spec", {})]
    for container in (c for workload in workloads for c in _pod(workload)["containers"]):
        repository = container["image"].rpartition(":")[0]
        if repository in tags:
            container["image"] = f"{repository}:{tags[repository]}"
    return built


def _pod(workload: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = workload["spec"]["template"]["spec"]
    return pod


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = _pod(workload)["containers"]
    assert isinstance(container, dict)
    return container


@pytest.fixture(scope="module")
def built() -> dict[tuple[str, str], dict[str, Any]]:
    return build()


@pytest.fixture(scope="module")
def statefulset(built: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return built["StatefulSet", "foundry-monitor"]


def test_the_overlay_names_existing_files_and_replaces_the_deployment(
    built: dict[tuple[str, str], dict[str, Any]],
) -> None:
    """The overlay builds on the base and its own files, replaces the base's ConfigMap, and leaves a
    StatefulSet instead of the Deployment, with the base's Service, ServiceMonitor and PrometheusRule."""
    overlay = load_yaml(SHARDED / "kustomization.yaml")
    assert (SHARDED / _BASE_DIR / "kustomization.yaml").is_file()
    for name in overlay["resources"][1:]:
        assert (SHARDED / name).is_file(), name
    for patch in overlay["patches"]:
        assert (SHARDED / patch["path"]).is_file(), patch
    (generator,) = overlay["configMapGenerator"]
    assert generator["behavior"] == "replace"
    assert generator["name"] in {
        g["name"] for g in load_yaml(BASE / "kustomization.yaml")["configMapGenerator"]
    }
    assert set(built) == {
        ("StatefulSet", "foundry-monitor"),
        ("Service", "foundry-monitor"),
        ("ServiceMonitor", "foundry-monitor"),
        ("PrometheusRule", "foundry-monitor"),
        ("ConfigMap", "foundry-monitor-config"),
    }


def test_builtin_kinds_validate_against_kubernetes_schemas(
    built: dict[tuple[str, str], dict[str, Any]],
) -> None:
    """The StatefulSet, the headless Service and the ConfigMap validate strictly against the Kubernetes
    schemas; a misspelt StatefulSet field is caught."""
    validator = require_module("kubernetes_validate")
    for key in (
        ("StatefulSet", "foundry-monitor"),
        ("Service", "foundry-monitor"),
        ("ConfigMap", "foundry-monitor-config"),
    ):
        validator.validate(built[key], K8S_VERSION, strict=True)
    broken = yaml.safe_load(yaml.safe_dump(built["StatefulSet", "foundry-monitor"]))
    broken["spec"]["volumeClaimTemplate"] = broken["spec"].pop("volumeClaimTemplates")
    with pytest.raises(validator.ValidationError):
        validator.validate(broken, K8S_VERSION, strict=True)


def test_one_shard_per_pod_behind_a_headless_service(
    built: dict[tuple[str, str], dict[str, Any]], statefulset: dict[str, Any]
) -> None:
    """Each pod runs `run --shard auto --total-shards M` with M the replica count and POD_NAME from the
    downward API; the headless Service governing the StatefulSet selects its pods and the ServiceMonitor
    selects the Service, so every shard is scraped once."""
    spec = statefulset["spec"]
    container = _container(statefulset)
    args = container["args"]
    assert args[-4:] == ["--shard", "auto", "--total-shards", str(spec["replicas"])]
    assert spec["replicas"] == 3
    env = {item["name"]: item for item in container["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "FOUNDRY_TOKEN" not in env
    service = built["Service", "foundry-monitor"]
    assert spec["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    monitor = built["ServiceMonitor", "foundry-monitor"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    for ordinal in range(spec["replicas"]):
        assert Shard.of_pod(f"{statefulset['metadata']['name']}-{ordinal}", spec["replicas"]) == Shard(
            ordinal, 3
        )


def test_the_pod_is_the_bases_but_for_the_shard_its_token_and_its_state_volume(
    statefulset: dict[str, Any],
) -> None:
    """The StatefulSet's pod is the base Deployment's pod (hardening, probes, resources, image) except for
    the shard flags after the base's arguments, POD_NAME instead of FOUNDRY_TOKEN, the token Secret's
    volume, and the state on a claim per pod instead of an emptyDir."""
    deployment = load_yaml(BASE / "deployment.yaml")
    ours, theirs = _pod(statefulset), _pod(deployment)
    assert {k: v for k, v in ours.items() if k not in ("containers", "volumes")} == {
        k: v for k, v in theirs.items() if k not in ("containers", "volumes")
    }
    assert statefulset["spec"]["template"]["metadata"] == deployment["spec"]["template"]["metadata"]
    mine, base = _container(statefulset), _container(deployment)
    differing = ("args", "env", "volumeMounts", "image")
    assert {k: v for k, v in mine.items() if k not in differing} == {
        k: v for k, v in base.items() if k not in differing
    }
    assert mine["image"].rpartition(":")[0] == base["image"].rpartition(":")[0]
    assert mine["args"][: len(base["args"])] == base["args"]
    assert [e for e in mine["env"] if e["name"] != "POD_NAME"] == [
        e for e in base["env"] if e["name"] != "FOUNDRY_TOKEN"
    ]
    mounts = {m["name"]: m for m in mine["volumeMounts"]}
    assert [m for m in mine["volumeMounts"] if m["name"] != "foundry-tokens"] == base["volumeMounts"]
    assert mounts["foundry-tokens"]["readOnly"] is True
    volumes = {v["name"]: v for v in ours["volumes"]}
    assert [v for v in ours["volumes"] if v["name"] != "foundry-tokens"] == [
        v for v in theirs["volumes"] if v["name"] != "state"
    ]
    assert volumes["foundry-tokens"]["secret"]["secretName"] == "foundry-monitor-shard-tokens"
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "state" not in volumes
    assert statefulset["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenScaled": "Delete",
        "whenDeleted": "Retain",
    }


def test_each_pod_reads_its_own_token_and_writes_its_own_state_on_its_volume(
    statefulset: dict[str, Any], tmp_path: Path
) -> None:
    """For every ordinal, the overlay's configuration validates with that pod's environment (POD_NAME
    foundry-monitor-N, optional Secrets absent), reads the token file named after the pod in the token
    Secret's mount, listens on the container port, and its shard's state file lies on the state claim."""
    from monitor.config import load_config

    container = _container(statefulset)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    text = (SHARDED / "monitor.yaml").read_text(encoding="utf-8")
    token_file = load_yaml(SHARDED / "monitor.yaml")["foundry"]["auth"]["token_file"]
    assert token_file == mounts["foundry-tokens"] + "/${POD_NAME}"
    # The Secret's files, where the test can create them.
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    config = tmp_path / "monitor.yaml"
    config.write_text(text.replace(mounts["foundry-tokens"], str(secrets)), encoding="utf-8")
    plain = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    # Variables without a default: the pod's environment must set them.
    assert (
        set(re.findall(r"\$\{([A-Za-z_]\w*)\}", text))
        == {"POD_NAME", "FOUNDRY_HOSTNAME"}
        <= {"POD_NAME", *plain}
    )
    replicas = statefulset["spec"]["replicas"]
    paths = set()
    for ordinal in range(replicas):
        pod = f"{statefulset['metadata']['name']}-{ordinal}"
        (secrets / pod).write_text(f"token-of-{pod}\n")
        loaded = load_config(config, environ={**plain, "POD_NAME": pod})
        assert loaded.foundry.auth.token_file == str(secrets / pod)
        assert loaded.server.port == PORT
        state = Shard(ordinal, replicas).state(loaded.state).path
        assert state.startswith(mounts["state"] + "/")
        paths.add(state)
    assert len(paths) == replicas


def test_kubectl_kustomize_renders_what_these_tests_check(
    built: dict[tuple[str, str], dict[str, Any]],
) -> None:
    """Where kubectl is installed, its kustomize makes the same documents of the overlay as build() does,
    up to the namespace and the ConfigMap's hash suffix (CI has no kubectl: there this check skips)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = run([kubectl, "kustomize", str(SHARDED)])
    assert result.returncode == 0, result.stderr
    rendered = {}
    for document in yaml.safe_load_all(result.stdout):
        assert document["metadata"].pop("namespace") == "monitoring"
        name = document["metadata"]["name"]
        if document["kind"] == "ConfigMap":
            document["metadata"]["name"] = name = name.rsplit("-", 1)[0]
        rendered[document["kind"], name] = document
    for volume in _pod(rendered["StatefulSet", "foundry-monitor"])["volumes"]:
        if "configMap" in volume:
            volume["configMap"]["name"] = volume["configMap"]["name"].rsplit("-", 1)[0]
    assert rendered == built
