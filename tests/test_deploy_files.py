"""The compose file, the Dockerfile and the Kubernetes manifests match the code they run.

No Docker engine runs here, so the files are checked instead: every command is a real entry
point (parsed by the real CLI parser), every DOWNLOADER_* variable is a setting, every port is
the one the command listens on, the download volume is shared, and the autoscaler watches the
lists Celery really uses. The processes they start are started for real elsewhere in the
suite (`downloader worker`, `api`, `flower`).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from downloader.api.auth import OPEN_PATHS
from downloader.cli import build_parser
from downloader.config import Settings
from downloader.store.keys import PRIORITY_LEVELS, Keys

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
    assert interpolate(env["DOWNLOADER_REDIS_URL"], {}) == "redis://redis:6379/0"
    if service == "api":  # every route but /health needs the key
        assert [f"{args.port}:{args.port}"] == spec["ports"]
    if service == "flower":  # it can shut workers down: this host only, unless opened
        assert [f"127.0.0.1:{args.port}:{args.port}"] == spec["ports"]
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


# -- safe defaults: nothing exposed without credentials ---------------------------------------

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>\w+)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|(?P<named>\w+))"
)


class Unset(Exception):
    """A `${VAR:?message}` whose VAR is unset or empty: compose stops with the message."""


def interpolate(value: str, env: dict[str, str]) -> str:
    """`value` as compose interpolates it (the compose specification's "Interpolation":
    `$$`, `$VAR`, `${VAR}`, and `-`, `?`, `+` with or without `:`; with `:` an empty value
    counts as unset)."""

    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name, op, arg = match["braced"] or match["named"], match["op"] or "", match["arg"] or ""
        value = env.get(name)
        missing = not value if op.startswith(":") else value is None
        if op.endswith("-"):
            return arg if missing else str(value)
        if op.endswith("?"):
            if missing:
                raise Unset(f"{name}: {arg}")
            return str(value)
        if op.endswith("+"):
            return "" if missing else arg
        return value or ""

    return _VARIABLE.sub(one, value)


def render_compose(env: dict[str, str]) -> tuple[Any, list[str]]:
    """The compose file as `docker compose config` would see it with `env`, and the
    messages of every required variable that is missing (compose stops at the first)."""
    refused: list[str] = []

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        if isinstance(node, str):
            try:
                return interpolate(node, env)
            except Unset as exc:
                refused.append(str(exc))
        return node

    return walk(COMPOSE), refused


def test_the_compose_interpolation_model_follows_the_specification() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert (
        interpolate("$$SET ${SET} $SET ${NONE:-d} ${EMPTY:-d} ${EMPTY-d}", env) == "$SET v v d d "
    )
    assert interpolate("${SET:+alt}${EMPTY+alt}${EMPTY:+alt}${NONE+alt}", env) == "altalt"
    for refused in ("${EMPTY:?say}", "${NONE?say}", "${NONE:?say}"):
        with pytest.raises(Unset, match="say"):
            interpolate(refused, env)
    assert interpolate("${EMPTY?say}", env) == ""


def test_compose_refuses_to_start_without_flower_credentials() -> None:
    """`docker compose up` without FLOWER_BASIC_AUTH (or with it empty) stops with a message
    naming it, as it does without DOWNLOADER_API_KEY; with both it starts, with the values
    given and no default password anywhere."""
    _, refused = render_compose({})
    assert [message.split(":")[0] for message in refused] == [
        "DOWNLOADER_API_KEY",
        "FLOWER_BASIC_AUTH",
    ]
    _, refused = render_compose({"DOWNLOADER_API_KEY": "k", "FLOWER_BASIC_AUTH": ""})
    assert len(refused) == 1 and refused[0].startswith("FLOWER_BASIC_AUTH: set FLOWER_BASIC_AUTH")
    rendered, refused = render_compose({"DOWNLOADER_API_KEY": "k", "FLOWER_BASIC_AUTH": "a:b"})
    assert refused == []
    assert rendered["services"]["flower"]["environment"]["FLOWER_BASIC_AUTH"] == "a:b"
    assert rendered["services"]["api"]["environment"]["DOWNLOADER_API_KEY"] == "k"
    text = (ROOT / "docker-compose.yml").read_text()
    defaulted = re.findall(r"\$\{(\w+):?-", text)
    assert not [name for name in defaulted if re.search("KEY|AUTH|PASS|TOKEN|SECRET", name)]
    assert "change-me" not in text


def test_compose_publishes_no_redis_and_flower_on_loopback_only() -> None:
    services = COMPOSE["services"]
    assert "ports" not in services["redis"] and "ports" not in services["worker"]
    for spec in services.values():
        for published in spec.get("ports", []):
            assert published.startswith("127.0.0.1:") or published == "8000:8000", published


def test_the_manifests_carry_no_default_credential_and_flower_needs_one() -> None:
    secret = next(d for d in MANIFESTS if d["kind"] == "Secret")
    assert secret["stringData"]["FLOWER_BASIC_AUTH"] == ""  # `downloader flower` refuses it
    assert "change-me" not in json.dumps(MANIFESTS) and "change_me" not in json.dumps(MANIFESTS)
    flower = next(c for c in containers() if c.get("command", [])[:2] == ["downloader", "flower"])
    assert "--no-auth" not in flower["command"]
    auth = next(e for e in flower["env"] if e["name"] == "FLOWER_BASIC_AUTH")
    ref = auth["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"] and not ref.get("optional")
    for service in (d for d in MANIFESTS if d["kind"] == "Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", service["metadata"]


def test_only_the_downloader_and_keda_reach_redis() -> None:
    """Redis has no password: a NetworkPolicy lets only the workers, the API, Flower and
    KEDA's scaler in (with a CNI that enforces policies; see deploy/README.md)."""
    policy = next(
        d
        for d in MANIFESTS
        if d["kind"] == "NetworkPolicy"
        and d["spec"]["podSelector"] == {"matchLabels": {"app": "redis"}}
    )
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
    apps = {
        peer["podSelector"]["matchLabels"]["app"] for peer in rule["from"] if "podSelector" in peer
    }
    deployments = {d["metadata"]["name"] for d in MANIFESTS if d["kind"] == "Deployment"}
    assert apps == deployments == {"downloader-worker", "downloader-api", "downloader-flower"}
    namespaces = [peer["namespaceSelector"] for peer in rule["from"] if "namespaceSelector" in peer]
    assert namespaces == [{"matchLabels": {"kubernetes.io/metadata.name": "keda"}}]
    kustomization = next(d for d in MANIFESTS if d["kind"] == "Kustomization")
    assert "network-policy.yaml" in kustomization["resources"]
