"""The HTTP side: Quart routes and the WebSocket transport. Each route module builds a blueprint
bound to one gateway."""
