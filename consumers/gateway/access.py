"""Who may call the gateway and how much at once: API keys -> tenants, and in-flight limits.

Keys are looked up by their SHA-256 digest (comparing digests does not leak the keys' bytes
through timing). With no key configured, the gateway is open and its turns have no tenant.
"""

from __future__ import annotations

import hashlib
from collections import Counter

__all__ = ["Admission", "Keys", "NoKey"]


class NoKey(Exception):
    """The request has no key, or one not configured."""


class Keys:
    def __init__(self, tenants_by_key: dict[str, str]) -> None:
        self._tenants = {_digest(key): tenant for key, tenant in tenants_by_key.items()}

    @property
    def open(self) -> bool:
        return not self._tenants

    def tenant(self, authorization: str | None) -> str | None:
        """The tenant of ``Authorization: Bearer KEY`` (None when the gateway is open); raises
        ``NoKey`` for a missing or unknown key."""
        if self.open:
            return None
        scheme, _, key = (authorization or "").partition(" ")
        tenant = self._tenants.get(_digest(key.strip())) if scheme.lower() == "bearer" else None
        if tenant is None:
            raise NoKey
        return tenant


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class Admission:
    """At most ``total`` requests in flight, and ``per_tenant`` of any one tenant."""

    def __init__(self, total: int, per_tenant: int) -> None:
        self.total, self.per_tenant = total, per_tenant
        self._tenants: Counter[str | None] = Counter()
        self.in_flight = 0

    def enter(self, tenant: str | None) -> bool:
        if self.in_flight >= self.total or self._tenants[tenant] >= self.per_tenant:
            return False
        self.in_flight += 1
        self._tenants[tenant] += 1
        return True

    def leave(self, tenant: str | None) -> None:
        self.in_flight -= 1
        self._tenants[tenant] -= 1
        if not self._tenants[tenant]:
            del self._tenants[tenant]
