"""Four example filters written with routeyard's ``@filter`` decorator.

A filter is an async function that takes an ``AgentTask`` and returns a ``FilterResult``: pass the
turn on, change its messages (input filters) or the agents' replies (output filters), or block it
with a reason the caller sees. Run them with the catalog beside this file::

    routeyard dev --catalog examples/filters/catalog.yaml --agents examples.agents:weather \\
        --filters examples.filters.filters:pii_redactor examples.filters.filters:content_guard \\
        examples.filters.filters:context_enricher examples.filters.filters:pii_restorer

- ``pii_redactor`` (input): e-mail addresses and phone numbers become ``[EMAIL_1]``, ``[PHONE_1]``
  before any agent sees them; the originals are kept in the turn's filter notes.
- ``content_guard`` (input): blocks turns asking to ignore instructions or run shell commands.
- ``context_enricher`` (input): adds a system note (the sender's locale from the event metadata).
- ``pii_restorer`` (output): puts the originals back into the replies, for the caller only.

Delivery is at least once: a filter may be called again for the same ``task.task_id`` after a
crash. These are pure functions of the task, so a second call gives the same answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from routeyard.consumers.filters import FilterResult, filter
from routeyard.schemas import AgentTask, Message, PriorReply

MAX_TEXT = 64 * 1024
"""Filters read at most this much of one message (the patterns stay linear anyway)."""
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}")
_PHONE = re.compile(r"(?<![\w+])\+?\d[\d ().-]{6,18}\d(?!\w)")
_BANNED = re.compile(r"ignore (?:all |your )?previous instructions|\brm -rf\b", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"\[(?:EMAIL|PHONE)_\d{1,6}\]")


def redact(text: str, notes: dict[str, str]) -> str:
    """``text`` with e-mails and phone numbers replaced by placeholders recorded in ``notes``
    (the same value keeps the same placeholder within a turn)."""
    seen = {v: k for k, v in notes.items()}

    def swap(kind: str) -> Callable[[re.Match[str]], str]:
        def one(match: re.Match[str]) -> str:
            value = match.group(0)
            if value not in seen:
                seen[value] = f"[{kind}_{sum(k.startswith(f'[{kind}_') for k in notes) + 1}]"
                notes[seen[value]] = value
            return seen[value]

        return one

    text = _EMAIL.sub(swap("EMAIL"), text[:MAX_TEXT])
    return _PHONE.sub(swap("PHONE"), text)


def restore(text: str, notes: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: notes.get(m.group(0), m.group(0)), text)


@filter("PiiRedactor")
async def pii_redactor(task: AgentTask) -> FilterResult:
    notes: dict[str, str] = {}
    messages = [
        m if m.role == "system" else Message(role=m.role, content=redact(m.content, notes), name=m.name)
        for m in task.messages
    ]
    if not notes:
        return FilterResult.passed()
    return FilterResult.changed(messages=messages, notes=notes)


@filter("ContentGuard")
async def content_guard(task: AgentTask) -> FilterResult:
    last = next((m.content for m in reversed(task.messages) if m.role == "user"), "")
    if _BANNED.search(last[:MAX_TEXT]):
        return FilterResult.blocked("the request asks to override instructions or run shell commands")
    return FilterResult.passed()


@filter("ContextEnricher")
async def context_enricher(task: AgentTask) -> FilterResult:
    locale = task.metadata.get("locale", "unknown")[:32]
    note = Message(role="system", content=f"The user's locale is {locale}.")
    return FilterResult.changed(messages=[note, *task.messages])


@filter("PiiRestorer")
async def pii_restorer(task: AgentTask) -> FilterResult:
    notes = {k: v for k, v in task.filter_notes.items() if _PLACEHOLDER.fullmatch(k)}
    if not notes:
        return FilterResult.passed()
    replies = [
        PriorReply(agent=r.agent, status=r.status, content=restore(r.content, notes)) for r in task.prior_replies
    ]
    if all(new.content == old.content for new, old in zip(replies, task.prior_replies, strict=True)):
        return FilterResult.passed()
    return FilterResult.changed(replies=replies)
