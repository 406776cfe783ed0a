"""The semantic engine's agents: each agent's prototype texts, and a catalog's prototype vectors.

An agent is a set of prototypes: its description, the description's sentences and the items of a
"Can: a; b" / "Handles: a, b" list (phrased as requests: "help me with a"), and its catalog
examples. Its similarity to a text is the best cosine similarity over its prototypes.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from routeyard.router.catalog import AgentSpec
from routeyard.router.settings import SemanticSettings

__all__ = ["AgentIndex", "agent_prototypes"]

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_LIST = re.compile(r"^\s*[A-Z][\w ]{0,30}:\s*(?P<items>.+)$")


def agent_prototypes(agent: AgentSpec, s: SemanticSettings) -> list[str]:
    """The texts an agent is matched against: description, its sentences and list items, examples.

    Sentences and list items ("pin change", "Find a restaurant") are phrased as requests with
    ``prototype_template`` ("help me with pin change"): that matches what users say better.
    """
    texts = [agent.description]
    for sentence in _SENTENCE.split(agent.description):
        listed = _LIST.match(sentence)
        items = listed.group("items").rstrip(".") if listed else ""
        parts = re.split(";" if ";" in items else ",", items) if listed else [sentence]
        texts.extend(s.prototype_template.format(p.strip()) for p in parts if p.strip())
    texts.extend(agent.examples if s.use_examples else ())
    return list(dict.fromkeys(t.strip() for t in texts if t.strip()))


class AgentIndex(NamedTuple):
    """A catalog's prototype vectors (prototypes, dim); ``starts``: each agent's first row."""

    names: tuple[str, ...]
    vectors: Any
    starts: Any

    def similarities(self, vectors: Any) -> Any:
        """(texts, agents): each text's best similarity over each agent's prototypes."""
        import numpy as np

        return np.maximum.reduceat(vectors @ self.vectors.T, self.starts, axis=1)
