"""Reading and driving routeyard's chat page in Chromium, as a user would (shared by the browser tests)."""

from __future__ import annotations

import json

from tests.browser.cdp import Chromium

DONE = "document.querySelectorAll('.turn[data-status]').length >= {n}"
TURNS = """[...document.querySelectorAll('.turn')].map(t => ({
  status: t.dataset.status || null,
  agents: t.querySelector('.decision').dataset.agents || '',
  decision: t.querySelector('.decision').textContent,
  footer: t.querySelector('.footer').textContent,
  replies: Object.fromEntries([...t.querySelectorAll('.reply')].map(
    r => [r.dataset.agent, r.querySelector('.content').textContent])),
  elementsInReplies: t.querySelectorAll('.content *').length,
}))"""


def type_key(browser: Chromium, key: str) -> None:
    """Type the API key into its field as a user does (the page stores it on change)."""
    field = "document.getElementById('api-key')"
    browser.evaluate(f"{field}.value = {json.dumps(key)}; {field}.dispatchEvent(new Event('change'))")


def type_and_send(browser: Chromium, text: str) -> None:
    browser.evaluate(f"document.getElementById('message').value = {json.dumps(text)}")
    browser.evaluate("document.getElementById('send').click()")


# Installed before a send: notes every text a reply box shows on its way (per agent), so a test can
# tell a reply that grew piece by piece (chunks forwarded as they arrive) from one set whole at the end.
WATCH_GROWTH = """window.seen = {}; new MutationObserver(() => {
  for (const r of document.querySelectorAll('.reply')) {
    const text = r.querySelector('.content').textContent, list = (window.seen[r.dataset.agent] ||= []);
    if (text && list[list.length - 1] !== text) list.push(text);
  }
}).observe(document, {childList: true, subtree: true, characterData: true})"""
SEEN = "window.seen"


def grew(seen: dict[str, list[str]], final: dict[str, str]) -> dict[str, bool]:
    """Per agent: whether the reply was shown as a proper prefix of its final text before the whole."""
    return {
        agent: any(text != whole and whole.startswith(text) for text in seen.get(agent, []))
        for agent, whole in final.items()
    }
