"""The Kubernetes base in ``deploy/kubernetes``, checked as far as a machine without a cluster can:
``kubectl kustomize`` renders it, every object validates against the API's schemas (offline), the
app gets exactly the settings it reads, and the probes, the memory and the grace period agree
with what the app does when it runs here.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import re
import signal
import subprocess
import time
from contextlib import AsyncExitStack

import kubernetes_validate
import psutil
import pytest
import yaml
from support import free_port, ws_client
from support.binaries import require_program
from support.http import http_get
from support.kafka import produce
from support.server import REPO_ROOT
from support.status import wait_ready

from siscom.config import Settings, describe_variables

BASE = REPO_ROOT / "deploy" / "kubernetes"
OPERATIONS = REPO_ROOT / "docs" / "operations.md"
BENCH_RESULTS = REPO_ROOT / "bench" / "RESULTS.md"
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
SETTINGS = {name for name, _, _ in describe_variables()}
SECRET_SETTINGS = {f.name.upper() for f in dataclasses.fields(Settings) if f.metadata["spec"].secret}
#: Kubernetes versions the objects must validate against: an older supported one to the newest
#: schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.29.0", "1.32.0", kubernetes_validate.latest_version())


def kubectl() -> str:
    """The kubectl binary; .ci/run installs one, so under CI its absence fails the test."""
    return require_program("kubectl", "kubernetes-client")


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(BASE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def only(rendered: list[dict], kind: str) -> dict:
    found = [doc for doc in rendered if doc["kind"] == kind]
    assert len(found) == 1, (kind, [d["metadata"]["name"] for d in found])
    return found[0]


def pod_spec(rendered: list[dict]) -> dict:
    return only(rendered, "Deployment")["spec"]["template"]["spec"]


def container(rendered: list[dict]) -> dict:
    (gateway,) = pod_spec(rendered)["containers"]
    return gateway


def app_environment(rendered: list[dict]) -> dict[str, str]:
    """What the container's environment holds: every ConfigMap and Secret it takes ``envFrom``."""
    gateway = container(rendered)
    assert "env" not in gateway, "settings come from the ConfigMap and the Secret only"
    environment: dict[str, str] = {}
    for source in gateway["envFrom"]:
        ((kind, reference),) = ((k, v) for k, v in source.items() if k in ("configMapRef", "secretRef"))
        doc = only(rendered, "ConfigMap" if kind == "configMapRef" else "Secret")
        assert doc["metadata"]["name"] == reference["name"] and not reference.get("optional")
        data = {name: str(value) for name, value in (doc.get("data") or {}).items()}
        if kind == "secretRef":  # base64 in the object, plain in the container
            data = {name: base64.b64decode(value).decode() for name, value in data.items()}
        assert not set(data) & set(environment)
        environment.update(data)
    return environment


def effective_settings(rendered: list[dict]) -> Settings:
    """The settings the app starts with in the pod."""
    return Settings.from_env(app_environment(rendered), env_file=None)


def prestop_seconds(rendered: list[dict]) -> float:
    command = container(rendered)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, command
    return float(command[1])


def cpu_cores(text: str) -> float:
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def quantity_bytes(text: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9, "": 1}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text).groups()
    return float(number) * units[unit]


# What kubectl renders


def test_kubectl_kustomize_renders_each_object_of_the_base(rendered):
    kinds = sorted(doc["kind"] for doc in rendered)
    assert kinds == sorted(
        ["ConfigMap", "Secret", "Service", "Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Ingress"]
    )


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schemas(rendered, version):
    for doc in rendered:
        # strict: a misspelt or misplaced field is an error, not something the API server drops.
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_can_fail(rendered):
    deployment = dict(only(rendered, "Deployment"))
    deployment["spec"] = {**deployment["spec"], "replica": 2}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_app_gets_every_setting_it_reads_and_nothing_else(rendered):
    environment = app_environment(rendered)
    assert sorted(set(environment) ^ SETTINGS) == []
    # The secrets, and only they, come from the Secret.
    assert set(only(rendered, "Secret")["data"]) == SECRET_SETTINGS == {"STREAM_JWT_SECRET", "KAFKA_PASSWORD"}
    # And the values start the app: no bad setting waits in the ConfigMap.
    effective_settings(rendered)


def test_the_pod_runs_unprivileged_on_a_read_only_root_with_a_tmp_volume(rendered):
    pod = pod_spec(rendered)
    gateway = container(rendered)
    security = gateway["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    uid = re.search(r"useradd .*--uid (\d+)", DOCKERFILE.read_text()).group(1)
    assert pod["securityContext"]["runAsUser"] == int(uid)
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False
    # The one place the app writes (tempfile; the Prometheus directory of --workers N).
    (mount,) = gateway["volumeMounts"]
    assert mount["mountPath"] == "/tmp"
    (volume,) = pod["volumes"]
    assert volume["name"] == mount["name"] and "emptyDir" in volume


def test_memory_is_sized_for_the_connection_limit_from_the_benchmark_figure(rendered):
    figure = re.search(r"server memory per connection \| ([0-9.]+) KB", BENCH_RESULTS.read_text())
    per_connection_kb = float(figure.group(1))
    connections = effective_settings(rendered).stream_max_connections
    resources = container(rendered)["resources"]
    request = quantity_bytes(resources["requests"]["memory"])
    limit = quantity_bytes(resources["limits"]["memory"])
    assert connections > 0, "the memory request assumes a bounded number of connections"
    assert request >= connections * per_connection_kb * 1024
    assert limit > request
    # One process uses one core at most: a CPU limit of one core throttles nothing.
    assert cpu_cores(resources["requests"]["cpu"]) <= cpu_cores(resources["limits"]["cpu"]) == 1


def test_replicas_budget_autoscaler_and_service_all_point_at_the_pods(rendered):
    deployment = only(rendered, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["replicas"] >= 2
    hpa = only(rendered, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"] < hpa["spec"]["maxReplicas"]
    pdb = only(rendered, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    service = only(rendered, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert [port["targetPort"] for port in service["spec"]["ports"]] == ["http"]
    assert set(container_ports(rendered)) == {"http", "metrics"}


def test_prometheus_finds_metrics_on_their_own_port_outside_the_service(rendered):
    settings = effective_settings(rendered)
    annotations = only(rendered, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == container_ports(rendered)["metrics"] == settings.metrics_port
    # Reached without a token, so only on a port the Service (and so the Ingress) does not carry.
    assert settings.metrics_access == "open"
    assert all(
        port["targetPort"] != "metrics" and port["port"] != settings.metrics_port
        for port in only(rendered, "Service")["spec"]["ports"]
    )


def test_the_ingress_routes_the_stream_and_the_page_with_timeouts_above_the_keep_alive(rendered):
    ingress = only(rendered, "Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    keepalive = effective_settings(rendered).stream_keepalive_seconds
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > keepalive
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"]) > keepalive
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    service = only(rendered, "Service")
    routed = {}
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == service["metadata"]["name"]
            assert backend["port"]["name"] in {port["name"] for port in service["spec"]["ports"]}
            routed[path["path"]] = path["pathType"]
    assert routed["/api/v1/stream"] == "Exact"
    # Only the stream and the page go out: nothing below routes /metrics, /ready or the stats.
    for private in ("/metrics", "/ready", "/health", "/api/v1/stream/stats"):
        assert not any(
            private == path or (kind == "Prefix" and private.startswith(path)) for path, kind in routed.items()
        ), private


def test_the_operations_doc_says_how_to_apply_it_what_it_waits_and_what_was_not_verified(rendered):
    text = OPERATIONS.read_text()
    start = text.index("## Kubernetes")
    end = text.find("\n## ", start + 1)  # the next section, or the end of the page
    section = " ".join(text[start : end if end != -1 else len(text)].split())
    assert "kubectl apply -k deploy/kubernetes" in section
    assert "Not verified here" in section
    assert f"the `preStop` hook waits {prestop_seconds(rendered):.0f} s" in section
    assert f"The grace period is {pod_spec(rendered)['terminationGracePeriodSeconds']} s" in section


# What the app does, run here with the pod's command and environment


def pod_command_args(rendered: list[dict]) -> list[str]:
    """The container's command after its address (which the test moves to a loopback port)."""
    gateway = container(rendered)
    command = gateway["command"] + gateway.get("args", [])
    assert command[:4] == ["siscom", "serve", "--bind", "0.0.0.0:8000"], command
    assert container_ports(rendered)["http"] == 8000
    return command[4:]


def container_ports(rendered: list[dict]) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in container(rendered)["ports"]}


async def test_the_probes_answer_and_sigterm_with_clients_ends_within_the_grace_period(
    rendered, server_factory, broker, topic, tmp_path
):
    """The pod's own command and environment (the broker, topic and addresses moved to the test's)."""
    gateway = container(rendered)
    metrics_address = f"127.0.0.1:{free_port()}"
    environment = {
        **app_environment(rendered),
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "KAFKA_TOPIC": topic,
        "METRICS_BIND": metrics_address,  # loopback, not 0.0.0.0:9100
        "TMPDIR": str(tmp_path / "tmp"),
    }
    (tmp_path / "tmp").mkdir()
    server = server_factory(environment, args=pod_command_args(rendered), started=False)
    server.start()
    for probe in ("livenessProbe", "readinessProbe"):
        assert gateway[probe]["httpGet"]["port"] == "http"
    liveness = gateway["livenessProbe"]["httpGet"]["path"]
    readiness = gateway["readinessProbe"]["httpGet"]["path"]
    assert http_get(server.url + liveness)[0] == 200
    await wait_ready(server)
    assert (liveness, readiness) == ("/health", "/ready")
    assert http_get(server.url + readiness)[0] == 200
    # Prometheus' port answers without a token; the main one keeps /metrics to itself.
    assert http_get(f"http://{metrics_address}/metrics")[0] == 200
    assert http_get(server.url + "/metrics")[0] == 404

    # The arithmetic in deployment.yaml counts about 55 MB for the process without clients.
    rss = psutil.Process(server.pid).memory_info().rss
    assert rss < 80e6, rss

    grace = pod_spec(rendered)["terminationGracePeriodSeconds"]
    budget = grace - prestop_seconds(rendered)
    assert budget > 0
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(ws_client(server.ws_url())) for _ in range(50)]
        await produce(broker.bootstrap, topic, [b'{"data":{"DEVICE_ID":"dev-1"}}'])
        for client in clients:
            await client.next_frame(10.0)
        started = time.monotonic()
        # Killed at the budget, as the kubelet would at the end of the grace period.
        status = await asyncio.to_thread(server.stop, signal.SIGTERM, budget)
        elapsed = time.monotonic() - started
        codes = [await client.wait_closed() for client in clients]
    assert status == 0, server.log_tail()
    assert codes == [1001] * len(clients)
    assert elapsed < budget
    # One process serving alone writes nothing to /tmp (the pod's emptyDir is for --workers N).
    assert list((tmp_path / "tmp").iterdir()) == []
    print(f"SIGTERM with {len(clients)} clients: exited in {elapsed:.2f} s (budget {budget:.0f} s)")


def test_the_snapshot_writer_overlay_adds_one_writer_and_gives_every_pod_the_topic():
    result = subprocess.run(
        [kubectl(), "kustomize", str(REPO_ROOT / "deploy" / "snapshot-writer")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    documents = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    deployments = {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == "Deployment"}
    assert set(deployments) == {"siscom-stream", "siscom-stream-snapshot-writer"}
    writer = deployments["siscom-stream-snapshot-writer"]
    assert writer["spec"]["replicas"] == 1
    (container,) = writer["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["siscom", "snapshot-writer"]
    for doc in documents:
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)
    # Both read the same (hash-named) ConfigMap, which names the topic: the writer can start.
    (config,) = [doc for doc in documents if doc["kind"] == "ConfigMap"]
    for deployment in deployments.values():
        (pod_container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert {"configMapRef": {"name": config["metadata"]["name"]}} in pod_container["envFrom"]
    settings = Settings.from_env({k: v for k, v in config["data"].items()}, env_file=None)
    assert settings.kafka_snapshot_topic == "tracking-data-last-positions"
