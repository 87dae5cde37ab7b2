"""The container deployment in ``deploy/``, checked as far as a machine without a container
engine can: the compose file parses and wires what the app reads, the Dockerfile's commands are
the documented ones and work when run here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml
from support.nginx import TEMPLATE, placeholders
from support.server import REPO_ROOT

from siscom.config import describe_variables
from siscom.dev.processes import free_port

DEPLOY = REPO_ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
OPERATIONS = REPO_ROOT / "docs" / "operations.md"
SETTINGS = {name: default for name, default, _ in describe_variables()}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def instruction(keyword: str) -> str:
    found = [arguments for k, arguments in final_stage() if k == keyword]
    assert len(found) == 1, f"{keyword}: {found}"
    return found[0]


def image_command() -> list[str]:
    return json.loads(instruction("CMD"))


def healthcheck_command() -> list[str]:
    return json.loads(instruction("HEALTHCHECK").partition("CMD")[2])


# docker-compose.yml


def test_compose_runs_the_broker_the_gateway_and_nginx(compose):
    assert {"redpanda", "topics", "app", "nginx"} <= set(compose["services"])
    assert "redpanda" in compose["services"]["redpanda"]["image"]


def test_the_app_gets_every_setting_it_reads_and_nothing_else(compose):
    environment = compose["services"]["app"]["environment"]
    missing = sorted(set(SETTINGS) - set(environment))
    assert missing == [], "add to the app's environment: " + ", ".join(f"{n}: ${{{n}:-}}" for n in missing)
    assert sorted(set(environment) - set(SETTINGS)) == []
    # Each one comes from deploy/.env (or the shell) under its own name.
    for name, value in environment.items():
        assert re.fullmatch(r"\$\{" + name + r":-[^}]*\}", value), (name, value)


def test_other_services_read_only_settings_of_the_app(compose):
    for service in ("topics", "simulator", "snapshot-writer"):
        assert set(compose["services"][service]["environment"]) <= set(SETTINGS), service


def test_the_app_image_is_built_from_the_repository_root_with_the_dockerfile(compose):
    build = compose["services"]["app"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert context == REPO_ROOT
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    assert "ports" not in compose["services"]["app"], "replicas must not fight over a host port"


def test_nginx_renders_the_template_with_a_value_for_every_placeholder(compose):
    nginx = compose["services"]["nginx"]
    assert "./nginx.conf:/etc/nginx/templates/default.conf.template:ro" in nginx["volumes"]
    environment = nginx["environment"]
    names = placeholders(TEMPLATE.read_text())
    assert names == {"SISCOM_NGINX_LISTEN", "SISCOM_NGINX_UPSTREAM", "SISCOM_NGINX_READ_TIMEOUT"}
    assert names <= set(environment)
    # envsubst must touch only the placeholders, never nginx's own $variables.
    only = re.compile(environment["NGINX_ENVSUBST_FILTER"])
    assert all(only.search(name) for name in names)
    assert not any(only.search(name) for name in ("host", "http_upgrade", "HOSTNAME", "PATH"))
    host, _, port = environment["SISCOM_NGINX_UPSTREAM"].partition(":")
    assert host == "app" and port == image_command()[-1].rpartition(":")[2]


def test_nginx_lets_streams_stay_silent_longer_than_the_keep_alive_interval(compose):
    value = compose["services"]["nginx"]["environment"]["SISCOM_NGINX_READ_TIMEOUT"]
    default = re.fullmatch(r"\$\{SISCOM_NGINX_READ_TIMEOUT:-(\d+)s\}", value)
    assert default, value
    assert int(default.group(1)) > float(SETTINGS["STREAM_KEEPALIVE_SECONDS"])


# Dockerfile


def test_nginx_hides_its_version_and_keeps_tokens_out_of_its_access_log():
    text = TEMPLATE.read_text()
    assert re.search(r"^\s*server_tokens off;", text, re.M)
    formats = dict(re.findall(r"log_format (\S+) ((?:'[^']*'\s*)+);", text))
    logs = re.findall(r"^\s*access_log \S+ (\S+);", text, re.M)
    assert logs and all(name in formats for name in logs)
    for name in logs:
        # $request, $request_uri and $args all carry the query string, where ?token= lives.
        assert not re.search(r"\$(request|request_uri|args|query_string|arg_token)\b", formats[name])


def test_the_image_is_slim_and_does_not_run_as_root():
    assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", instruction("FROM"))
    assert instruction("USER") not in ("root", "0")
    for keyword, arguments in dockerfile_instructions():
        if keyword == "COPY" and "--from" not in arguments:
            *sources, _ = arguments.split()
            for source in sources:
                assert (REPO_ROOT / source).exists(), source


def test_the_image_command_and_build_command_are_the_ones_in_the_operations_doc():
    doc = OPERATIONS.read_text()
    assert " ".join(image_command()) in doc
    assert "docker build -f deploy/Dockerfile -t siscom-stream ." in doc
    assert "docker compose -f deploy/docker-compose.yml up" in doc
    assert "cp deploy/.env.example deploy/.env" in doc
    assert image_command()[-1].rpartition(":")[2] == instruction("EXPOSE")


def run_healthcheck(port: int) -> int:
    command = [arg.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for arg in healthcheck_command()]
    assert command[0] == "python"
    return subprocess.run([sys.executable, *command[1:]], capture_output=True, timeout=10).returncode


def test_the_image_command_serves_and_its_healthcheck_sees_it(spawn):
    """Run the image's CMD and HEALTHCHECK here, with only the address moved to loopback."""
    port = free_port()
    command = [arg.replace("0.0.0.0:8000", f"127.0.0.1:{port}") for arg in image_command()]
    assert command[0] == "siscom"
    assert run_healthcheck(port) != 0  # nothing there yet: the check can fail
    server = spawn(
        [sys.executable, "-m", "siscom", *command[1:]],
        lambda: run_healthcheck(port) == 0,
        name="image-command",
        # No broker at all: the gateway is alive regardless, and that is what the check asks.
        env={"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"},
        timeout=20,
        interval=0.2,
    )
    assert server.stop(10) == 0
