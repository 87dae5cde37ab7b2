"""The Quart application: routes bound to one :class:`~siscom.gateway.Gateway`.

``create_app()`` reads the settings from the environment when none are given, so the app can also
be served directly with ``hypercorn "siscom.app:create_app()"``.

The app owns the gateway's lifecycle, the same under ``siscom serve`` and plain Hypercorn: its
``while_serving`` starts the gateway before the first request and stops it after the last. In
between, the server's own shutdown signal drains it (every client closed with 1001) before the
server waits for connections to end (see :meth:`~siscom.gateway.Gateway.drain_when`);
:meth:`~siscom.gateway.Gateway.stop` drains whatever that did not.
"""

from __future__ import annotations

from quart import Quart

from siscom.config import Settings
from siscom.gateway import Gateway
from siscom.security.headers import add_security_headers
from siscom.web import server
from siscom.web.demo import demo_blueprint
from siscom.web.prometheus import prometheus_blueprint
from siscom.web.sse import sse_blueprint
from siscom.web.status import status_blueprint
from siscom.web.stream import stream_blueprint


def create_app(settings: Settings | None = None, gateway: Gateway | None = None) -> Quart:
    settings = settings or Settings.from_env()
    gateway = gateway or Gateway(settings)
    app = Quart(__name__, static_folder=None)
    # Streaming websockets and responses (siscom.web.server).
    server.install(app, internals=settings.stream_coalesce_writes)
    app.extensions["siscom.gateway"] = gateway
    app.register_blueprint(status_blueprint(gateway))
    app.register_blueprint(prometheus_blueprint(gateway))
    app.register_blueprint(stream_blueprint(gateway))
    app.register_blueprint(sse_blueprint(gateway))
    app.register_blueprint(demo_blueprint(settings))

    @app.after_request
    async def security_headers(response):
        add_security_headers(response.headers)
        return response

    @app.while_serving
    async def gateway_lifecycle():
        await gateway.start()
        yield
        await gateway.stop()

    return app


def gateway_of(app: Quart) -> Gateway:
    return app.extensions["siscom.gateway"]
