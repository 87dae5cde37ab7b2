"""Optional protections of the stream: tokens, origins, connection limits, response headers.

Each module has one job: :mod:`~siscom.security.tokens` verifies JWTs and says which devices a
client may see, :mod:`~siscom.security.keys` loads the public keys that verify them,
:mod:`~siscom.security.origins` checks the browser's ``Origin``, :mod:`~siscom.security.limits`
counts connections and :mod:`~siscom.security.headers` sets HTTP response headers;
:mod:`siscom.guard` holds one process's instances of all of them, built from the settings.
"""
