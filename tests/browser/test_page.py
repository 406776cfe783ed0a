"""The chat page in a real headless Chromium: a multi-intent message shows the routing decision
(both agents, mode, engine, why, time to decide) and both agents' replies streamed and labelled;
the conversation id is kept across turns; the API key goes out as a Bearer token; data from the
gateway is shown as text, never run as HTML; errors are one line on the turn.

Skipped, with the reason, where no Chromium is installed (``apt-get install chromium``; CI does).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from tests.browser.cdp import Chromium
from tests.browser.chatpage import DONE, SEEN, TURNS, WATCH_GROWTH, grew, type_and_send, type_key
from tests.browser.stub import HOSTILE, KEY, REPLIES, Stub, serving

pytestmark = [pytest.mark.browser, pytest.mark.integration]

MESSAGE = "translate this and summarise it"


def test_multi_intent_turn_streams_both_agents_and_keeps_the_conversation(browser: Chromium, screenshots: Path) -> None:
    stub = Stub()
    with serving(stub.app()) as base:
        browser.navigate(base + "/")
        type_key(browser, KEY)
        browser.send("Page.addScriptToEvaluateOnNewDocument", {"source": WATCH_GROWTH})
        browser.navigate(f"{base}/?q={quote(MESSAGE)}")  # the deep link sends on load
        browser.wait_for(DONE.format(n=1))
        seen = browser.evaluate(SEEN)
        type_and_send(browser, "and now in German")
        browser.wait_for(DONE.format(n=2))
        turns = browser.evaluate(TURNS)
        shot = browser.screenshot(screenshots / "page-multi-intent.png")
        title = browser.evaluate("document.title")

    first = turns[0]
    assert first["status"] == "ok", first
    assert first["agents"] == "TranslateAgent,SummaryAgent"
    for shown in ("mode parallel", "engine rules", "decided in 1.7 ms", "keywords: translate, summarise"):
        assert shown in first["decision"], (shown, first["decision"])
    assert "scores TranslateAgent 1.00, SummaryAgent 0.90" in first["decision"]
    assert first["replies"] == REPLIES  # streamed, then the durable record wins
    # The chunks were shown as they came: the translation grew piece by piece (the check that
    # test_dev_page records, proven here against a stub that certainly streams).
    assert grew(seen, {"TranslateAgent": REPLIES["TranslateAgent"]}) == {"TranslateAgent": True}, seen
    assert seen["TranslateAgent"][0] == "Bonjour, ", seen
    assert HOSTILE in first["replies"]["TranslateAgent"] and first["elementsInReplies"] == 0
    assert title == "routeyard"
    assert "status ok" in first["footer"] and "event ev-1" in first["footer"]

    (headers1, body1), (headers2, body2) = stub.requests
    assert body1 == {"model": "routeyard", "stream": True, "messages": [{"role": "user", "content": MESSAGE}]}
    assert headers1["authorization"] == f"Bearer {KEY}" and "x-conversation-id" not in headers1
    assert headers2["x-conversation-id"] == "conv-stub-1"  # minted by the gateway, kept by the page
    assert body2["messages"] == [{"role": "user", "content": "and now in German"}]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_wrong_key_is_one_line_on_the_turn(browser: Chromium) -> None:
    stub = Stub()
    with serving(stub.app()) as base:
        browser.navigate(base + "/")
        type_key(browser, "not-the-key")
        type_and_send(browser, MESSAGE)
        browser.wait_for(DONE.format(n=1))
        turns = browser.evaluate(TURNS)
        busy = browser.evaluate("document.getElementById('send').disabled")

    assert turns[0]["status"] == "error"
    assert turns[0]["footer"] == "HTTP 401: missing or invalid API key"
    assert turns[0]["replies"] == {} and busy is False
    assert stub.requests[0][0]["authorization"] == "Bearer not-the-key"
