"""HTTP and WebSocket routes. Each module builds a blueprint bound to one gateway."""
