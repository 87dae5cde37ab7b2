"""The named scenarios: what load each one applies, what it measures, and the target it checks.

Every scenario runs each server under test in turn against the same private broker, on a topic
of its own, with the same clients and the same producer, and returns a :class:`~bench.report.Result`
whose rows hold one figure per server.

Each scenario is one module of this package that defines ``SCENARIO`` (a
:class:`~bench.scenarios.harness.Scenario`); they are found here, so adding a scenario is adding
a module. The shared machinery is in :mod:`bench.scenarios.harness` (options, load shapes, the
broker and servers) and :mod:`bench.scenarios.load` (a server under fixed-rate load and its
figures).
"""

from __future__ import annotations

import importlib
import pkgutil

from bench.scenarios.harness import Bench, Options, Scenario
from bench.servers import (
    NAIVE,
    SISCOM,
    SISCOM_2_WORKERS,
    SISCOM_DEFLATE,
    SISCOM_DEFLATE_EACH,
    SISCOM_DELAYED,
    SISCOM_PLAIN,
    SISCOM_SSE,
    WEBSOCKETS,
    Target,
)

__all__ = ["DEFAULT_TARGETS", "DEFLATE_TARGETS", "SCENARIOS", "TARGETS", "Bench", "Options", "Scenario", "discover"]


def discover() -> dict[str, Scenario]:
    """Every scenario of this package, by name, in the order ``all`` runs them."""
    found = []
    for module in pkgutil.iter_modules(__path__):
        scenario = getattr(importlib.import_module(f"{__name__}.{module.name}"), "SCENARIO", None)
        if isinstance(scenario, Scenario):
            found.append(scenario)
    return {scenario.name: scenario for scenario in sorted(found, key=lambda s: (s.order, s.name))}


SCENARIOS: dict[str, Scenario] = discover()

#: The servers each scenario runs by default.
DEFAULT_TARGETS: dict[str, tuple[Target, ...]] = {name: scenario.targets for name, scenario in SCENARIOS.items()}
TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        SISCOM,
        NAIVE,
        SISCOM_2_WORKERS,
        SISCOM_PLAIN,
        SISCOM_SSE,
        SISCOM_DEFLATE,
        SISCOM_DEFLATE_EACH,
        SISCOM_DELAYED,
        WEBSOCKETS,
    )
}
#: The servers of ``--deflate``: the gateway, its clients without and with a compression offer.
DEFLATE_TARGETS: tuple[Target, ...] = (SISCOM, SISCOM_DEFLATE)
