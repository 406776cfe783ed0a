"""Per-tenant response topics: where a tenant's responses go, and the settings they need."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from routeyard.consumers.settings import Settings
from routeyard.schemas import Topics


def _settings(**router: object) -> Settings:
    return Settings.model_validate({"topic_prefix": "ry.", "router": router})


def test_responses_for_a_tenant() -> None:
    assert Topics(prefix="ry.").responses_for("acme") == "ry.responses.acme"


def test_tenant_responses_go_to_the_tenants_topic_only_when_the_option_is_on() -> None:
    on = _settings(tenants=["acme", ""], tenant_response_topics=True)
    assert (on.response_topic("acme"), on.response_topic(None)) == ("ry.responses.acme", "ry.responses")
    assert on.tenant_response_topics() == ["ry.responses.acme"]
    off = _settings(tenants=["acme"])
    assert (off.response_topic("acme"), off.tenant_response_topics()) == ("ry.responses", [])


def test_tenant_response_topics_need_an_allow_list_of_valid_names() -> None:
    with pytest.raises(ValidationError, match=r"needs the router\.tenants allow-list"):
        _settings(tenant_response_topics=True)
    with pytest.raises(ValidationError, match="not a valid topic name"):
        _settings(tenants=["acme", "a b"], tenant_response_topics=True)


def test_the_option_reads_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTEYARD_ROUTER__TENANT_RESPONSE_TOPICS", "true")
    monkeypatch.setenv("ROUTEYARD_ROUTER__TENANTS", '["acme"]')
    assert Settings().response_topic("acme") == "routeyard.responses.acme"
