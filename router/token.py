"""Task tokens: what binds an agent's reply to the task it answers.

Every agent shares one replies topic, and task ids are derived from event ids that anyone
reading the decisions topic sees. So each slot of a correlation holds a random secret (kept
only in the stored correlation, never on the bus), and each task attempt carries
``task_token(secret, task_id)``: an HMAC that differs per attempt and cannot be guessed from
the task id. The agent echoes it in its reply; a reply without the right token is refused.

No key management: the secret lives and dies with its correlation, and nothing beyond the
stored correlation is shared between workers.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_CHARS = 32


def new_secret() -> str:
    """A fresh slot secret: 16 random bytes, hex."""
    return secrets.token_hex(16)


def task_token(secret: str, task_id: str) -> str:
    """The token of one task attempt: HMAC-SHA256(secret, task id), hex, 32 characters."""
    digest = hmac.new(secret.encode("utf-8"), task_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return digest[:TOKEN_CHARS]


def token_matches(secret: str, task_id: str, token: str) -> bool:
    """Whether ``token`` is the token of ``task_id`` (compared in constant time)."""
    return hmac.compare_digest(task_token(secret, task_id).encode("ascii"), token.encode("utf-8"))
