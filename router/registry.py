"""Registered agents: who announced themselves, which are alive, and the catalog they extend.

Pure state over heartbeats (the registry topic is read in ``consumers/catalogs/registry.py``):
an agent is alive while one of its instances has announced itself within ``timeout_s``; an agent
whose instances all went quiet (or said they were leaving) is unavailable. A name of the catalog
always wins over a registered one: registration adds agents, it never replaces them.
"""

from __future__ import annotations

from collections.abc import Mapping

from routeyard.router.catalog import AgentSpec, Catalog


class Roster:
    """The registered agents seen so far: each one's latest spec and its instances' last beats."""

    MAX_INSTANCES = 256
    """Instances remembered per agent (the oldest beat is forgotten first)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._specs: dict[str, AgentSpec] = {}
        self._beats: dict[str, dict[str, float]] = {}
        self.revision = 0
        """Counts changes of the specs (a new agent, a changed description): merge again."""

    def beat(self, spec: AgentSpec, instance: str, at: float, *, leaving: bool = False) -> None:
        """``instance`` of ``spec.name`` announced itself at ``at`` (or said it is leaving)."""
        if self._specs.get(spec.name) != spec:
            self._specs[spec.name] = spec
            self.revision += 1
        beats = self._beats.setdefault(spec.name, {})
        if leaving:
            beats.pop(instance, None)
            return
        beats[instance] = max(at, beats.get(instance, at))
        if len(beats) > self.MAX_INSTANCES:
            del beats[min(beats, key=beats.__getitem__)]

    def alive(self, now: float) -> frozenset[str]:
        return frozenset(
            name for name, beats in self._beats.items() if any(now - at <= self.timeout_s for at in beats.values())
        )

    @property
    def specs(self) -> Mapping[str, AgentSpec]:
        return self._specs


def merge(catalog: Catalog, registered: Mapping[str, AgentSpec]) -> tuple[Catalog, tuple[str, ...]]:
    """``catalog`` with the registered agents it does not name appended, and their names."""
    extra = tuple(spec for name, spec in sorted(registered.items()) if name not in catalog)
    if not extra:
        return catalog, ()
    merged = Catalog(agents=(*catalog.agents, *extra), default=catalog.default)
    return merged, tuple(spec.name for spec in extra)
