"""The Kubernetes manifests in deploy/: valid against the Kubernetes schemas, and wired as a node needs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from server.cli import SHUTDOWN_TIMEOUT

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
MANIFESTS = sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def resources() -> dict[str, dict[str, Any]]:
    """kind -> the resource, over the manifests kustomization.yaml applies."""
    applied = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"]
    return {doc["kind"]: doc for name in applied for doc in documents(DEPLOY / name)}


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_every_manifest_is_valid_against_the_kubernetes_schemas(path: Path) -> None:
    for doc in documents(path):
        kubernetes_validate.validate(doc, kubernetes_validate.utils.latest_version(), strict=True)


def test_kustomization_applies_every_manifest_but_the_secret_example() -> None:
    applied = set(yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"])
    assert applied == {p.name for p in MANIFESTS} - {"secret.example.yaml"}
    assert set(resources()) == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}


def test_nodes_are_ready_on_ready_alive_on_health_and_stop_within_their_grace() -> None:
    deployment = resources()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (node,) = pod["containers"]
    assert node["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert node["livenessProbe"]["httpGet"]["path"] == "/health"
    pause = int(node["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pause + SHUTDOWN_TIMEOUT + 5
    # the image's own non-root user, checked by the kubelet
    user = re.search(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert user and pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(user.group(1))


def test_the_admin_token_and_urls_come_from_a_secret_and_the_services_are_managed_ones() -> None:
    kinds = resources()
    (node,) = kinds["Deployment"]["spec"]["template"]["spec"]["containers"]
    sources = {next(iter(src)): next(iter(src.values()))["name"] for src in node["envFrom"]}
    assert sources == {"configMapRef": "boxoffice", "secretRef": "boxoffice"}
    (secret,) = documents(DEPLOY / "secret.example.yaml")
    assert secret["metadata"]["name"] == "boxoffice"
    assert secret["stringData"] == {"ADMIN_TOKEN": "", "DATABASE_URL": "", "REDIS_URL": ""}  # no value to leak
    assert kinds["ConfigMap"]["data"]["KAFKA_BOOTSTRAP_SERVERS"]
    # no PostgreSQL, Redis or Kafka of our own: only the node image runs
    images = [c["image"] for doc in kinds.values() if doc["kind"] == "Deployment"
              for c in doc["spec"]["template"]["spec"]["containers"]]
    assert images == ["boxoffice"]


def test_the_disruption_budget_and_the_autoscaler_govern_the_nodes() -> None:
    kinds = resources()
    labels = kinds["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert kinds["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert kinds["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    assert kinds["Service"]["spec"]["selector"].items() <= labels.items()
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "boxoffice"}
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
