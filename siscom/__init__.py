"""siscom-stream: live GPS telemetry from Kafka, streamed to web clients over WebSocket.

The package is split so that the wire contract (:mod:`siscom.core.protocol`), record decoding
(:mod:`siscom.core.records`) and configuration (:mod:`siscom.config`) are pure and testable on their
own; the actors and the Quart app are built on top of them.
"""

__version__ = "0.1.0"
