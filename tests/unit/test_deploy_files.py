"""The deploy files (docker-compose.yml, deploy/Dockerfile, deploy/k8s/) agree
with the application and with each other.

No Docker engine or cluster is needed: the files are parsed and checked for
the properties that matter when they run (scalable workers, known settings,
probes on the web port, autoscaling bounded by the partition count).
"""

from __future__ import annotations

import fnmatch
import importlib.util
import itertools
import json
import shlex
import shutil
import subprocess
import time
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
import yaml

from agents.kafka.producer import new_event
from agents.settings import REFERENCE, Settings
from streams import topics
from streams.events import parse_event

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEMO_PRODUCER = ROOT / "deploy" / "demo_producer.py"
K8S = ROOT / "deploy" / "k8s"

KNOWN_SETTINGS = {name for name, _default, _meaning in REFERENCE}
USERPULSE_SERVICES = ("topics", "worker", "demo-producer")
DATA_DIR = "/var/lib/userpulse"


# ---- helpers -------------------------------------------------------------------
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def services() -> dict[str, dict[str, Any]]:
    result = compose()["services"]
    assert isinstance(result, dict)
    return result


def userpulse_env(env: dict[str, Any]) -> dict[str, str]:
    """A compose ``environment`` mapping as the process sees it (strings)."""
    return {key: "" if value is None else str(value) for key, value in env.items()}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends in a line continuation"
    return instructions


def instruction_args(name: str) -> list[str]:
    return [args for keyword, args in dockerfile_instructions() if keyword == name]


def copy_sources() -> list[str]:
    """Paths that COPY takes from the build context (not from another stage)."""
    sources: list[str] = []
    for args in instruction_args("COPY"):
        words = shlex.split(args)
        if any(w.startswith("--from=") for w in words):
            continue
        paths = [w for w in words if not w.startswith("--")]
        sources.extend(paths[:-1])
    return sources


def k8s_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def k8s_object(kind: str) -> dict[str, Any]:
    found = [d for d in k8s_documents() if d.get("kind") == kind]
    assert len(found) == 1, f"expected exactly one {kind} in deploy/k8s, got {len(found)}"
    return found[0]


def configmap_env() -> dict[str, str]:
    data = k8s_object("ConfigMap")["data"]
    return {key: str(value) for key, value in data.items()}


def worker_container() -> dict[str, Any]:
    (container,) = k8s_object("StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def load_demo_producer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_producer", DEMO_PRODUCER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- docker-compose.yml --------------------------------------------------------
def test_compose_has_the_services() -> None:
    assert {"kafka", "redis", "topics", "worker", "demo-producer"} <= set(services())


def test_compose_worker_can_be_scaled() -> None:
    worker = services()["worker"]
    assert "container_name" not in worker, "a fixed name stops `--scale worker=3`"
    assert "ports" not in worker, "a fixed host port stops `--scale worker=3`"
    volumes = worker.get("volumes", [])
    assert DATA_DIR in volumes, "the RocksDB dir needs a volume of its own"
    for volume in volumes:
        assert isinstance(volume, str) and ":" not in volume, (
            f"worker volume {volume!r} is shared between replicas; RocksDB dirs cannot be"
        )


def test_compose_userpulse_settings_are_known_and_valid() -> None:
    for name in USERPULSE_SERVICES:
        env = userpulse_env(services()[name]["environment"])
        unknown = {key for key in env if key.startswith("USERPULSE_")} - KNOWN_SETTINGS
        assert not unknown, f"{name}: unknown settings {unknown} would stop the process"
        settings = Settings.from_env(env)
        assert str(settings.data_dir) == DATA_DIR
        assert settings.store == "rocksdb://"


def test_compose_settings_point_at_the_compose_servers() -> None:
    kafka_env = services()["kafka"]["environment"]
    advertised = {
        listener.split("://", 1)[1]
        for listener in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }
    for name in USERPULSE_SERVICES:
        settings = Settings.from_env(userpulse_env(services()[name]["environment"]))
        for server in settings.kafka_bootstrap.split(","):
            assert server in advertised, f"{name}: {server} is not a Kafka listener"
        redis_host = settings.redis_url.reveal().split("://", 1)[1].split(":", 1)[0]
        assert redis_host in services()


def test_compose_starts_in_order() -> None:
    svc = services()
    assert svc["topics"]["command"] == ["topics"]
    assert svc["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    worker_deps = svc["worker"]["depends_on"]
    assert worker_deps["topics"]["condition"] == "service_completed_successfully"
    assert worker_deps["redis"]["condition"] == "service_healthy"
    assert "kafka-broker-api-versions.sh" in " ".join(svc["kafka"]["healthcheck"]["test"])
    assert "ping" in svc["redis"]["healthcheck"]["test"]


def test_compose_kafka_is_one_kraft_node() -> None:
    env = {key: str(value) for key, value in services()["kafka"]["environment"].items()}
    assert services()["kafka"]["image"] == "apache/kafka:4.1.1"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(env["KAFKA_NODE_ID"] + "@")
    listeners = env["KAFKA_LISTENERS"].split(",")
    assert "PLAINTEXT://:9092" in listeners and "CONTROLLER://:9093" in listeners
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"


def test_compose_demo_producer_runs_only_on_request() -> None:
    demo = services()["demo-producer"]
    assert demo["profiles"] == ["demo"]
    entrypoint = demo["entrypoint"]
    assert entrypoint[0] == "python"
    in_image = {shlex.split(args)[-1] for args in instruction_args("COPY")}
    assert entrypoint[1] in in_image, "the image must contain the demo producer"
    assert DEMO_PRODUCER.is_file()


def test_compose_file_is_valid() -> None:
    doc = compose()
    # The shared environment is an extension field, merged by YAML anchors.
    assert "x-userpulse-env" in doc
    for name in USERPULSE_SERVICES:
        assert services()[name]["environment"] == doc["x-userpulse-env"]
    docker_compose = shutil.which("docker-compose")
    if docker_compose is not None:
        result = subprocess.run(
            [docker_compose, "-f", str(COMPOSE), "config", "-q"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr


# ---- deploy/Dockerfile and .dockerignore -----------------------------------------
def test_dockerfile_runs_userpulse_worker_as_non_root() -> None:
    assert instruction_args("FROM"), "no FROM"
    for base in instruction_args("FROM"):
        assert base.split()[0] == "python:3.11-slim"
    assert json.loads(instruction_args("ENTRYPOINT")[-1]) == ["userpulse"]
    assert json.loads(instruction_args("CMD")[-1]) == ["worker"]
    user = instruction_args("USER")[-1].split(":")[0]
    assert user not in ("", "root", "0")
    assert "6066" in instruction_args("EXPOSE")[-1].split()
    assert DATA_DIR in json.loads(instruction_args("VOLUME")[-1])


def test_dockerfile_healthcheck_asks_the_web_port_without_curl() -> None:
    (check,) = instruction_args("HEALTHCHECK")
    assert "curl" not in check
    # healthy = ready (docs/operations.md): partitions, tables, Kafka and Redis
    assert "urllib" in check and "127.0.0.1" in check and "/health/ready" in check
    assert "'6066'" in check  # the default of USERPULSE_WEB_PORT


def test_dockerfile_copies_what_pip_install_needs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", project["project"]["readme"]}
    needed |= {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {source.rstrip("/") for source in copy_sources()}
    assert needed <= copied, f"not copied into the image: {needed - copied}"


def test_dockerignore_keeps_the_build_inputs() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for required in (".venv", ".git", ".userpulse"):
        assert required in patterns
    for source in copy_sources():
        for pattern in patterns:
            excluded = fnmatch.fnmatch(source, pattern) or source.startswith(pattern + "/")
            assert not excluded, f".dockerignore {pattern!r} drops {source!r}"


# ---- deploy/k8s ------------------------------------------------------------------
def test_k8s_configmap_settings_are_known_and_valid() -> None:
    env = configmap_env()
    unknown = set(env) - KNOWN_SETTINGS
    assert not unknown, f"unknown settings {unknown} would stop the worker"
    settings = Settings.from_env(env)
    assert str(settings.data_dir) == DATA_DIR


def test_k8s_statefulset_probes_hit_the_web_port() -> None:
    container = worker_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    web_port = Settings.from_env(configmap_env()).web_port
    assert ports["web"] == web_port == 6066
    paths = {
        "startupProbe": "/health/live",
        "readinessProbe": "/health/ready",
        "livenessProbe": "/health/live",  # a worker waiting for Kafka must not be killed
    }
    for probe, path in paths.items():
        http = container[probe]["httpGet"]
        assert http["path"] == path, probe
        port = ports.get(http["port"], http["port"])
        assert port == web_port, probe


def test_k8s_statefulset_keeps_local_state_and_stops_gracefully() -> None:
    sts = k8s_object("StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    container = worker_container()
    assert pod["terminationGracePeriodSeconds"] == 60
    assert container["args"] == ["worker"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert (
        mounts[claim["metadata"]["name"]] == Settings.from_env(configmap_env()).data_dir.as_posix()
    )
    config_refs = [s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s]
    assert config_refs == [k8s_object("ConfigMap")["metadata"]["name"]]


def test_k8s_headless_service_selects_the_workers() -> None:
    sts = k8s_object("StatefulSet")
    service = k8s_object("Service")
    assert service["spec"]["clusterIP"] == "None"
    assert sts["spec"]["serviceName"] == service["metadata"]["name"]
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert sts["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_k8s_keda_scales_the_workers_on_their_own_lag() -> None:
    scaled = k8s_object("ScaledObject")
    sts = k8s_object("StatefulSet")
    settings = Settings.from_env(configmap_env())
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    target = scaled["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", sts["metadata"]["name"])
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    assert scaled["spec"]["maxReplicaCount"] <= settings.partitions, (
        "more workers than partitions only idle"
    )
    (trigger,) = scaled["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert all(isinstance(v, str) for v in meta.values()), "KEDA metadata values are strings"
    assert meta["consumerGroup"] == settings.app_id == "userpulse"
    assert meta["topic"] == settings.topic(topics.USER_EVENTS) == "user-events"
    assert int(meta["lagThreshold"]) > 0
    assert meta["bootstrapServersFromEnv"] in configmap_env()


# ---- deploy/demo_producer.py -----------------------------------------------------
def test_demo_producer_events_pass_the_pipeline_validation() -> None:
    demo = load_demo_producer()
    sample = list(itertools.islice(demo.sample_events(), 60))
    now_ms = time.time_ns() // 1_000_000
    for user_id, event_type, properties in sample:
        doc = new_event(user_id, event_type, properties, context=demo.CONTEXT)
        event = parse_event(orjson.dumps(doc), now_ms=now_ms)
        assert event.key == user_id
    by_type = {event_type: props for _user, event_type, props in sample}
    assert {"signed_up", "session_started", "product_viewed"} <= set(by_type)
    assert set(by_type["product_added"]) == {"product_id", "quantity", "price", "cart_id"}
    assert set(by_type["order_completed"]) == {"order_id", "revenue", "currency", "products"}
    carts = sum(1 for _u, t, _p in sample if t == "product_added")
    orders = sum(1 for _u, t, _p in sample if t == "order_completed")
    assert 0 < orders < carts, "some carts must be abandoned, some bought"


def test_demo_producer_count_must_be_positive() -> None:
    demo = load_demo_producer()
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["0"])
    assert exit_info.value.code == 2


def test_the_grafana_dashboard_asks_only_for_metrics_a_worker_serves() -> None:
    import re

    from agents.worker.metrics import FAMILIES

    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/userpulse.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    used = {name for e in exprs for name in re.findall(r"userpulse_[a-z_]+", e)}
    suffixes = ("_total", "_bucket", "_sum", "_count")
    families = {next((n[: -len(s)] for s in suffixes if n.endswith(s)), n) for n in used}
    unknown = {f for f in families if f not in FAMILIES}
    assert not unknown, unknown
    assert set(FAMILIES) - families <= {"userpulse_redelivered_records"}  # each on a panel


def test_compose_monitoring_scrapes_every_worker_and_provisions_the_dashboard() -> None:
    defined = services()
    for name in ("prometheus", "grafana"):
        assert defined[name]["profiles"] == ["monitoring"]
        for volume in defined[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), volume
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    [sd] = job["dns_sd_configs"]
    web_port = Settings.from_env(userpulse_env(defined["worker"]["environment"])).web_port
    assert sd["names"] == ["worker"] and sd["port"] == web_port == 6066
