"""A real nginx in front of the servers under test, configured from ``deploy/nginx.conf``.

The deployment file is a template with ``${SISCOM_NGINX_*}`` placeholders (the official nginx
image fills them in with envsubst). :func:`render_template` does the same here, with one
addition: a line whose placeholder is given a list is written once per item, which is how the
test lists several replicas in the upstream block.

:class:`Nginx` runs one nginx process with everything it writes (pid file, logs, temporary
files) in its own directory, listening on a loopback port, in the foreground so the test owns
the process and stops it by its PID.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from siscom.dev.processes import ChildProcess, StartFailed, free_port, log_tail, port_accepts

from .server import REPO_ROOT, LoopbackHttp

TEMPLATE = REPO_ROOT / "deploy" / "nginx.conf"

_PLACEHOLDER = re.compile(r"\$\{(SISCOM_NGINX_[A-Z0-9_]+)\}")


def placeholders(text: str) -> set[str]:
    """The ``${SISCOM_NGINX_*}`` names a template uses."""
    return set(_PLACEHOLDER.findall(text))


def render_template(text: str, values: Mapping[str, str | Sequence[str]]) -> str:
    """Fill in every placeholder; a list value repeats its line once per item.

    Only ``${SISCOM_NGINX_*}`` is touched, so nginx's own ``$variables`` stay as they are.
    A placeholder without a value is an error, as a config nginx would choke on.
    """
    missing = placeholders(text) - set(values)
    if missing:
        raise KeyError(f"no value for {sorted(missing)}")
    lines = []
    for line in text.splitlines(keepends=True):
        listed = [name for name in _PLACEHOLDER.findall(line) if not isinstance(values[name], str)]
        if not listed:
            lines.append(_PLACEHOLDER.sub(lambda match: str(values[match.group(1)]), line))
            continue
        for item in values[listed[0]]:
            lines.append(
                _PLACEHOLDER.sub(
                    lambda match: item if match.group(1) == listed[0] else str(values[match.group(1)]), line
                )
            )
    return "".join(lines)


def _main_config(directory: Path, site: Path) -> str:
    # What the distribution's nginx.conf would hold, with every path inside `directory`.
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must reach the temp dirs
    temp = "\n".join(
        f"    {kind}_temp_path {directory / 'temp' / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}worker_processes 1;\n"
        f"pid {directory / 'nginx.pid'};\n"
        f"error_log {directory / 'error.log'} info;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        f"    access_log {directory / 'access.log'};\n"
        f"{temp}\n"
        f"    include {site};\n"
        "}\n"
    )


class Nginx(LoopbackHttp):
    """nginx serving a rendered ``deploy/nginx.conf`` on ``127.0.0.1:port``."""

    def __init__(
        self,
        binary: str,
        directory: Path,
        upstreams: Sequence[str],
        *,
        read_timeout: str = "90s",
        port: int | None = None,
    ) -> None:
        self.binary = binary
        self.directory = directory
        self.port = port if port is not None else free_port()
        self.host = "127.0.0.1"
        self.site = render_template(
            TEMPLATE.read_text(),
            {
                "SISCOM_NGINX_LISTEN": f"{self.host}:{self.port}",
                "SISCOM_NGINX_UPSTREAM": list(upstreams),
                "SISCOM_NGINX_READ_TIMEOUT": read_timeout,
            },
        )

    @property
    def error_log(self) -> Path:
        return self.directory / "error.log"

    def start(self, timeout: float = 10.0) -> Nginx:
        """Write the configuration, check it with ``nginx -t``, start, and wait for the port."""
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.directory / "temp" / kind).mkdir(parents=True, exist_ok=True)
        site = self.directory / "siscom.conf"
        site.write_text(self.site)
        config = self.directory / "nginx.conf"
        config.write_text(_main_config(self.directory, site))
        command = [self.binary, "-p", str(self.directory), "-c", str(config), "-e", str(self.error_log)]
        check = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=timeout)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t rejected the rendered config:\n{check.stderr}\n{self.site}")
        try:
            self._child = ChildProcess.start(
                [*command, "-g", "daemon off;"],
                lambda: port_accepts(self.host, self.port),
                timeout=timeout,
                name="nginx",
                log_path=self.directory / "stdout.log",
            )
        except StartFailed as failed:
            raise RuntimeError(f"{failed}\n{self.log_tail()}") from None
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Fast shutdown (SIGTERM to the master, which ends its workers); SIGKILL if it hangs."""
        if self._child is not None:
            self._child.stop(timeout)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.error_log, lines)
