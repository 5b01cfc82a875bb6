"""The deploy files of a Redis that fails over: compose's `sentinel` profile and the
Kubernetes overlay `deploy/sentinel/` (a primary, a replica and three sentinels), checked as
`test_deploy_files` checks the others, and against what the code reads: the URL they give
parses into the sentinels they start, the primary's name is the one the sentinels watch,
with a quorum of two, and the network policies let replication and the sentinels through."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from downloader.config import Settings
from downloader.store.connection import RedisTarget
from tests.test_deploy_files import COMPOSE, check_env, interpolate

ROOT = Path(__file__).resolve().parents[1]
OVERLAY = ROOT / "deploy" / "sentinel"


def monitor(text: str) -> tuple[str, str, int, int]:
    """(name, host, port, quorum) of a sentinel configuration's `sentinel monitor` line."""
    found = re.search(r"sentinel monitor (\S+) (\S+) (\d+) (\d+)", text)
    assert found, text
    return found[1], found[2], int(found[3]), int(found[4])


def test_the_compose_sentinel_profile_runs_a_replica_and_three_sentinels() -> None:
    services = COMPOSE["services"]
    profiled = {name for name, spec in services.items() if "sentinel" in spec.get("profiles", [])}
    assert profiled == {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}
    replica = services["redis-replica"]["command"]
    assert replica[replica.index("--replicaof") + 1 :][:2] == ["redis", "6379"]
    assert "--appendonly" in replica  # a promoted replica must keep what it has
    env = COMPOSE["x-downloader"]["environment"]
    check_env(list(env))
    header = (ROOT / "docker-compose.yml").read_text()
    (url,) = re.findall(r"DOWNLOADER_REDIS_URL='([^']+)'", header)
    settings = Settings(redis_master_name=env["DOWNLOADER_REDIS_MASTER_NAME"])
    target = RedisTarget(interpolate(env["DOWNLOADER_REDIS_URL"], {"DOWNLOADER_REDIS_URL": url}),
                         settings)  # fmt: skip
    assert target.sentinels == [(f"sentinel-{i}", 26379) for i in (1, 2, 3)]
    for name in ("sentinel-1", "sentinel-2", "sentinel-3"):
        script = services[name]["command"][-1]
        assert monitor(script) == (target.master_name, "redis", 6379, 2)
        assert "port 26379" in script and "--sentinel" in script
        assert "resolve-hostnames yes" in script  # containers come back with new addresses
    assert "ports" not in services["redis-replica"] and "ports" not in services["sentinel-1"]
    assert "redis-replica-data" in COMPOSE["volumes"]


def overlay() -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    kustomization = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    patches = [
        doc
        for patch in kustomization["patches"]
        for doc in yaml.safe_load_all((OVERLAY / patch["path"]).read_text())
    ]
    resources = [
        doc
        for name in kustomization["resources"]
        if name != "../"
        for doc in yaml.safe_load_all((OVERLAY / name).read_text())
    ]
    return kustomization, patches, resources


def test_the_kubernetes_overlay_finds_the_primary_through_three_sentinels() -> None:
    kustomization, patches, resources = overlay()
    assert kustomization["resources"][0] == "../" and kustomization["namespace"] == "downloader"
    config = next(d for d in patches if d["kind"] == "ConfigMap")
    check_env(list(config["data"]))
    target = RedisTarget(
        config["data"]["DOWNLOADER_REDIS_URL"],
        Settings(redis_master_name=config["data"]["DOWNLOADER_REDIS_MASTER_NAME"]),
    )
    sentinels = next(d for d in resources if d["kind"] == "StatefulSet")
    service = next(d for d in resources if d["kind"] == "Service")
    name, count = sentinels["metadata"]["name"], sentinels["spec"]["replicas"]
    assert count == 3 and sentinels["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    assert target.sentinels == [(f"{name}-{i}.{service['metadata']['name']}", 26379)
                                for i in range(count)]  # fmt: skip
    (container,) = sentinels["spec"]["template"]["spec"]["containers"]
    script = container["command"][-1]
    assert monitor(script) == (target.master_name, "redis-0.redis", 6379, 2)
    assert "--sentinel" in script and [p["containerPort"] for p in container["ports"]] == [26379]
    redis = next(d for d in patches if d["kind"] == "StatefulSet")
    assert redis["metadata"]["name"] == "redis" and redis["spec"]["replicas"] == 2
    start = redis["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    assert "--replicaof redis-0.redis 6379" in start and "--appendonly yes" in start


def test_the_overlay_lets_replication_and_the_sentinels_through_and_nothing_else() -> None:
    _, patches, resources = overlay()
    policies = {d["metadata"]["name"]: d for d in [*patches, *resources]
                if d["kind"] == "NetworkPolicy"}  # fmt: skip

    def admitted(policy: dict[str, Any]) -> set[str]:
        (rule,) = policy["spec"]["ingress"]
        return {p["podSelector"]["matchLabels"]["app"] for p in rule["from"] if "podSelector" in p}

    downloader = {"downloader-worker", "downloader-api", "downloader-flower"}
    assert admitted(policies["redis"]) == downloader | {"redis", "redis-sentinel"}
    assert admitted(policies["redis-sentinel"]) == downloader | {"redis-sentinel"}
    assert policies["redis-sentinel"]["spec"]["ingress"][0]["ports"] == [
        {"port": 26379, "protocol": "TCP"}
    ]
