"""Helpers shared by the integration and chaos tests.

They drive the real thing: a server process, a broker over TCP, WebSocket
clients on real sockets.  Each helper that starts something also knows how
to stop it.
"""

from siscom.dev.processes import free_port

from .http import http_get, http_get_json
from .kafka import consume, produce
from .server import ServerProcess
from .ws import WSClient, collect, ws_client

__all__ = [
    "ServerProcess",
    "WSClient",
    "collect",
    "consume",
    "free_port",
    "http_get",
    "http_get_json",
    "produce",
    "ws_client",
]
