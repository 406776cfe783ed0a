"""The router worker's side of agent variants: pick each conversation's variant for a batch,
and record it on the decision (``routeyard.router.variants`` decides; ``stores/variants`` pins).

The engines never see variants: the worker picks after deciding, per routed agent, from the
picks made for the batch's conversations in one Redis script call (beside the context append).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import msgspec
from routeyard.consumers.metrics import METRICS, child
from routeyard.consumers.stores.variants import Pin, VariantStore
from routeyard.router.catalog import AgentSpec, Catalog
from routeyard.router.correlation import Effect, Target
from routeyard.router.variants import note, plan_pin, shadow_effects, shadows, stable, variant_topic
from routeyard.schemas import ConversationEvent, Message, RoutingDecision, Topics

Picks = dict[tuple[str | None, str, str], tuple[str, str | None]]
"""(tenant, conversation, agent) -> (variant, why it is not the pinned or natural one)."""


async def pick(catalog: Catalog, store: VariantStore | None, events: Sequence[ConversationEvent]) -> Picks:
    """The variant of every (conversation, agent with variants) of the batch: pinned, or chosen and pinned."""
    specs = [a for a in catalog.agents if a.variants]
    if not specs or not events:
        return {}
    rolled = await store.rolled_back(specs, time.time()) if store is not None else {}
    pins: list[Pin] = []
    for event in events:
        for spec in catalog.restrict(event.agents):
            if spec.variants:
                out = rolled.get(spec.name, {})
                want, allowed = plan_pin(spec.variants, event.tenant, event.conversation_id, spec.salt, out)
                pins.append(Pin(spec.name, event.tenant, event.conversation_id, want, allowed))
    got = await store.pin(pins) if store is not None else [(p.want, None, True) for p in pins]
    picks: Picks = {}
    for p, (variant, replaced, new) in zip(pins, got, strict=True):
        agent = catalog.get(p.agent)
        assert agent is not None
        out = rolled.get(p.agent, {}) if new or replaced else {}  # a kept pin was chosen before any rollback
        why = note(agent.variants, p.tenant, p.conversation_id, agent.salt, variant, replaced, out)
        picks[(p.tenant, p.conversation_id, p.agent)] = (variant, why)
    return picks


def routed(
    spec: AgentSpec, event: ConversationEvent | None, picks: Picks, topics: Topics
) -> tuple[str, str | None, bool]:
    """(task topic, variant, whether it is a canary) of the agent for the event's conversation; an
    agent the batch picked no variant for (a fallback outside the turn's agents) gets its stable one."""
    if not spec.variants:
        return spec.topic or topics.agent(spec.name), None, False
    key = (event.tenant, event.conversation_id, spec.name) if event is not None else None
    variant = picks[key][0] if key in picks else stable(spec.variants)  # not picked: a fallback agent
    by_name = {v.name: v for v in spec.variants}
    chosen = by_name.get(variant) or by_name[stable(spec.variants)]
    return variant_topic(topics, spec.name, chosen), chosen.name, chosen.name != stable(spec.variants)


def recorded(decision: RoutingDecision, targets: Sequence[Target], picks: Picks, catalog: Catalog) -> RoutingDecision:
    """The decision with its variants, their notes and its shadows; counts each assignment."""
    variants = {t.agent: t.variant for t in targets if t.variant is not None}
    if not variants:
        return decision
    key = (decision.tenant, decision.conversation_id)
    notes = {a: why for a in variants if (why := picks.get((*key, a), ("", None))[1]) is not None}
    shadowed = {}
    for agent, variant in variants.items():
        child(METRICS.variant_assignments, agent=agent, variant=variant).inc()
        spec = catalog.get(agent)
        if spec is not None and shadows(spec.variants):
            shadowed[agent] = [v.name for v in shadows(spec.variants)]
    return msgspec.structs.replace(decision, variants=variants, variant_notes=notes, shadows=shadowed)


def shadow_tasks(
    decision: RoutingDecision,
    catalog: Catalog,
    topics: Topics,
    context: list[Message],
    metadata: dict[str, str],
    now: float,
    headers: list[tuple[str, bytes]] | None,
) -> list[Effect]:
    """A task copy for every shadow variant of the decision's agents (published with its tasks)."""
    effects: list[Effect] = []
    for agent, names in decision.shadows.items():
        spec = catalog.get(agent)
        if spec is None:
            continue
        effects += shadow_effects(
            {v.name: variant_topic(topics, agent, v) for v in spec.variants if v.name in names},
            agent=agent,
            event_id=decision.event_id,
            conversation_id=decision.conversation_id,
            tenant=decision.tenant,
            context=context,
            metadata=metadata,
            shadows_topic=topics.shadows,
            deadline=now + spec.timeout_s,
            headers=headers,
        )
    return effects
