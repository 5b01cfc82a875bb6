"""The compose file, the Dockerfile and the Kubernetes manifests match the code they run.

No Docker engine runs here, so the files are checked instead: every command is a real entry
point (parsed by the real CLI parser), every DOWNLOADER_* variable is a setting, every port is
the one the command listens on, the download volume is shared, and the autoscaler watches the
lists Celery really uses. The processes they start are started for real elsewhere in the
suite (`downloader worker`, `api`, `flower`).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from downloader.api.auth import OPEN_PATHS
from downloader.cli import build_parser
from downloader.config import Settings
from downloader.store.jobs import PRIORITY_LEVELS, Keys

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
MANIFESTS = [
    doc
    for path in sorted((ROOT / "deploy").glob("*.yaml"))
    for doc in yaml.safe_load_all(path.read_text())
    if doc
]
SETTINGS = {f"DOWNLOADER_{name.upper()}" for name in Settings.model_fields}
DEFAULT_PORTS = {"api": 8000, "flower": 5555}


def parse_command(argv: list[str]) -> Any:
    """The namespace the real CLI makes of a container command; fails on anything else."""
    assert argv[0] == "downloader", f"not the project's entry point: {argv}"
    args, extra = build_parser().parse_known_args(argv[1:])
    assert not extra or args.command == "flower", f"unknown arguments {extra} in {argv}"
    return args


def check_env(names: list[str]) -> None:
    for name in names:
        assert name in SETTINGS or name.startswith("FLOWER_"), f"{name} is not a setting"


def containers() -> list[dict[str, Any]]:
    found = []
    for doc in MANIFESTS:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            found += doc["spec"]["template"]["spec"]["containers"]
    return found


def test_the_dockerfile_runs_a_worker_and_installs_the_project() -> None:
    text = (ROOT / "Dockerfile").read_text()
    cmd = next(line for line in text.splitlines() if line.startswith("CMD "))
    args = parse_command(yaml.safe_load(cmd[4:]))
    assert args.command == "worker"
    assert "pip install ." in text and "USER downloader" in text
    env = [
        word.split("=")[0]
        for word in shlex.split(text.split("ENV", 1)[1].split("\n\n")[0])
        if "=" in word
    ]
    check_env([name for name in env if name.startswith(("DOWNLOADER_", "FLOWER_"))])


@pytest.mark.parametrize("service", ["worker", "api", "flower"])
def test_compose_services_run_real_commands_on_their_ports(service: str) -> None:
    spec = COMPOSE["services"][service]
    args = parse_command(spec["command"])
    assert args.command == service
    env = {**COMPOSE["x-downloader"]["environment"], **spec.get("environment", {})}
    check_env(list(env))
    assert env["DOWNLOADER_REDIS_URL"] == "redis://redis:6379/0"
    if service in DEFAULT_PORTS:
        assert [f"{args.port}:{args.port}"] == spec["ports"]
    if service == "api":
        assert f"127.0.0.1:{args.port}/health" in " ".join(spec["healthcheck"]["test"])
    if service == "flower":
        assert "FLOWER_BASIC_AUTH" in env


def test_compose_workers_scale_and_share_the_download_root() -> None:
    services = COMPOSE["services"]
    worker = {**COMPOSE["x-downloader"], **services["worker"]}
    assert "container_name" not in worker and "ports" not in worker  # --scale must work
    root = COMPOSE["x-downloader"]["environment"]["DOWNLOADER_DOWNLOAD_ROOT"]
    for name in ("worker", "api"):
        volumes = {**COMPOSE["x-downloader"], **services[name]}["volumes"]
        assert f"downloads:{root}" in volumes
    assert "downloads" in COMPOSE["volumes"]
    redis = services["redis"]
    assert "--appendonly" in redis["command"] and redis["healthcheck"]
    assert COMPOSE["x-downloader"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_every_manifest_command_env_and_probe_is_real() -> None:
    configmap = next(d for d in MANIFESTS if d["kind"] == "ConfigMap")
    secret = next(d for d in MANIFESTS if d["kind"] == "Secret")
    check_env(list(configmap["data"]) + list(secret["stringData"]))
    commands = {}
    for container in containers():
        if container["image"].startswith("redis"):
            continue
        args = parse_command(container["command"])
        commands[args.command] = args
        check_env([e["name"] for e in container.get("env", [])])
        ports = [p["containerPort"] for p in container.get("ports", [])]
        if args.command in DEFAULT_PORTS:
            assert ports == [args.port]
            for probe in ("readinessProbe", "livenessProbe"):
                action = container.get(probe, {})
                target = action.get("httpGet") or action.get("tcpSocket")
                if target:
                    assert target["port"] == args.port
    assert set(commands) == {"worker", "api", "flower"}
    api_paths = {
        c["readinessProbe"]["httpGet"]["path"]
        for c in containers()
        if c.get("command", [])[:2] == ["downloader", "api"]
    }
    assert api_paths == {"/health"}


def test_manifest_services_point_at_the_container_ports() -> None:
    ports = {c["name"]: {p["containerPort"] for p in c.get("ports", [])} for c in containers()}
    targets = {
        d["metadata"]["name"]: d["spec"]["ports"][0]["targetPort"]
        for d in MANIFESTS
        if d["kind"] == "Service"
    }
    assert targets == {"redis": 6379, "downloader-api": 8000, "downloader-flower": 5555}
    assert 8000 in ports["api"] and 5555 in ports["flower"] and 6379 in ports["redis"]


def test_workers_and_api_share_one_read_write_many_volume() -> None:
    claim = next(d for d in MANIFESTS if d["kind"] == "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    configmap = next(d for d in MANIFESTS if d["kind"] == "ConfigMap")
    root = configmap["data"]["DOWNLOADER_DOWNLOAD_ROOT"]
    for doc in MANIFESTS:
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] != "downloader-flower":
            pod = doc["spec"]["template"]["spec"]
            assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "downloads"
            assert pod["containers"][0]["volumeMounts"][0]["mountPath"] == root


def test_the_autoscaler_watches_every_priority_list_of_the_queue() -> None:
    scaled = next(d for d in MANIFESTS if d["kind"] == "ScaledObject")
    configmap = next(d for d in MANIFESTS if d["kind"] == "ConfigMap")
    namespace = configmap["data"]["DOWNLOADER_NAMESPACE"]
    queue = Keys(namespace).celery_queue(Settings().queue_id)
    prefix = f"{namespace}:celery:"  # the kombu global_keyprefix of DownloaderApp
    expected = {prefix + queue + (f":{level}" if level else "") for level in range(PRIORITY_LEVELS)}
    assert {t["metadata"]["listName"] for t in scaled["spec"]["triggers"]} == expected
    assert scaled["spec"]["scaleTargetRef"]["name"] == "downloader-worker"


def test_the_celery_key_prefix_is_the_one_the_autoscaler_assumes() -> None:
    from downloader.celery_app import create_app

    app = create_app("redis://127.0.0.1:6379/0", Settings(namespace="downloader"))
    options = app.conf.broker_transport_options
    assert options["global_keyprefix"] == "downloader:celery:"
    assert options["sep"] == ":" and options["priority_steps"] == list(range(PRIORITY_LEVELS))


def test_compose_refuses_to_start_without_the_api_key() -> None:
    """`${VAR:?message}` makes compose stop with the message when VAR is unset or empty; a
    default (`:-`) would publish port 8000 with whatever the default says."""
    value = COMPOSE["services"]["api"]["environment"]["DOWNLOADER_API_KEY"]
    assert re.fullmatch(r"\$\{DOWNLOADER_API_KEY:\?[^}]*set DOWNLOADER_API_KEY[^}]*\}", value)
    text = (ROOT / "docker-compose.yml").read_text()
    assert "DOWNLOADER_API_KEY:-" not in text and "DOWNLOADER_API_KEY-" not in text


def test_the_api_secret_must_be_filled_and_probes_need_no_key() -> None:
    secret = next(d for d in MANIFESTS if d["kind"] == "Secret")
    assert secret["stringData"]["DOWNLOADER_API_KEY"] == ""  # the API refuses to start so
    api = next(c for c in containers() if c.get("command", [])[:2] == ["downloader", "api"])
    keyed = next(e for e in api["env"] if e["name"] == "DOWNLOADER_API_KEY")
    ref = keyed["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"] and not ref.get("optional")
    for probe in ("readinessProbe", "livenessProbe"):
        path = api[probe].get("httpGet", {}).get("path")
        assert path is None or path in OPEN_PATHS, f"{probe} {path} needs the key"
    readme = (ROOT / "deploy" / "README.md").read_text()
    assert "kubectl -n downloader create secret generic downloader-secrets" in readme
    assert '--from-literal=DOWNLOADER_API_KEY="$(openssl rand -hex 32)"' in readme
    assert "refuses to start with an empty or blank key" in readme
