"""The session actors: one per client, between the router and the client's connection."""
