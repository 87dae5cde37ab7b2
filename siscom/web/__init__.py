"""The HTTP side: Quart routes, each a blueprint bound to one gateway, and what they check
(:mod:`~siscom.web.admission`). Everything that reaches below the public APIs of the server and
the framework lives in :mod:`siscom.web.server`, used only through its interface."""
