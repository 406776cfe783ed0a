"""Kafka TLS/SASL and Redis TLS/ACL settings: what every client is built with, secrets kept secret."""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError
from routeyard.consumers.kafka.admin import make_admin
from routeyard.consumers.kafka.bus import make_consumer, make_producer, security_options
from routeyard.consumers.settings import KafkaSettings, RedisSettings, Settings


@pytest.fixture(scope="module")
def client_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "client.pem", folder / "client.key"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=routeyard-test"]
    subprocess.run(
        [openssl, *request, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_plaintext_by_default() -> None:
    assert security_options(KafkaSettings()) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_over_tls(mechanism: str) -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_SSL", sasl_mechanism=mechanism, sasl_username="router", sasl_password="s3cret"
    )
    options = security_options(kafka)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == mechanism
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("router", "s3cret")
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


def test_mutual_tls_loads_the_client_certificate(client_cert: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = client_cert
    kafka = KafkaSettings(
        security_protocol="SSL", ssl_cafile=cert, ssl_certfile=cert, ssl_keyfile=key, ssl_check_hostname=False
    )
    context = security_options(kafka)["ssl_context"]
    assert not context.check_hostname
    assert any(c.get("subject") for c in context.get_ca_certs())  # the CA file was loaded
    wrong_key = tmp_path / "other.key"
    wrong_key.write_text("not a key")
    with pytest.raises(ssl.SSLError):
        security_options(kafka.model_copy(update={"ssl_keyfile": wrong_key}))


@pytest.mark.parametrize(
    "fields",
    [
        {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u"},  # no password
        {"security_protocol": "SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "p"},
        {"security_protocol": "SSL", "ssl_certfile": "/x.pem"},  # certificate without key
    ],
)
def test_incomplete_kafka_security_fails_at_start_up(fields: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        KafkaSettings.model_validate(fields)


async def test_every_kafka_client_gets_the_security_options() -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256", sasl_username="u", sasl_password="pw"
    )
    producer, consumer, admin = make_producer(kafka), make_consumer(kafka, [], None), make_admin(kafka)
    for client in (producer.client, consumer._client, admin._client):
        assert client._security_protocol == "SASL_PLAINTEXT"
        assert client._sasl_mechanism == "SCRAM-SHA-256"
        assert client._sasl_plain_password == "pw"


def test_redis_acl_credentials_and_tls(client_cert: tuple[Path, Path]) -> None:
    cert, key = client_cert
    redis = RedisSettings(
        url="rediss://cache:6380/0",
        username="router",
        password="pw",
        ssl_ca_certs=cert,
        ssl_certfile=cert,
        ssl_keyfile=key,
    )
    assert redis.client_options() == {
        "username": "router",
        "password": "pw",
        "ssl_check_hostname": True,
        "ssl_ca_certs": str(cert),
        "ssl_certfile": str(cert),
        "ssl_keyfile": str(key),
    }
    assert RedisSettings().client_options() == {}


@pytest.mark.parametrize(
    "fields",
    [
        {"url": "redis://cache:6379/0", "ssl_ca_certs": "/ca.pem"},  # TLS files without rediss://
        {"url": "redis://u:p@cache:6379/0", "password": "other"},  # credentials twice
        {"url": "rediss://cache:6379/0", "ssl_keyfile": "/k.pem"},
    ],
)
def test_inconsistent_redis_settings_fail(fields: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        RedisSettings.model_validate(fields)


def test_secrets_come_from_files_and_never_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "ROUTEYARD_KAFKA__SASL_PASSWORD").write_text("kafka-secret\n")
    (tmp_path / "ROUTEYARD_REDIS__PASSWORD").write_text("redis-secret")
    monkeypatch.setenv("ROUTEYARD_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("ROUTEYARD_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("ROUTEYARD_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("ROUTEYARD_KAFKA__SASL_USERNAME", "router")
    settings = Settings()
    assert settings.kafka.sasl_password is not None and settings.redis.password is not None
    assert settings.kafka.sasl_password.get_secret_value() == "kafka-secret"
    assert settings.redis.password.get_secret_value() == "redis-secret"
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("routeyard.test").info("settings: %s %r", settings, settings)
    shown = caplog.text + str(settings) + repr(settings) + settings.model_dump_json()
    assert "kafka-secret" not in shown and "redis-secret" not in shown


def test_a_variable_wins_over_a_secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ROUTEYARD_REDIS__USERNAME").write_text("from-file")
    monkeypatch.setenv("ROUTEYARD_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("ROUTEYARD_REDIS__USERNAME", "from-env")
    assert Settings().redis.username == "from-env"
    monkeypatch.delenv("ROUTEYARD_REDIS__USERNAME")
    assert Settings().redis.username == "from-file"
