"""Settings errors in words: one line per problem naming the variable, its value and the form
expected; unknown ROUTEYARD_* names warned about with a "did you mean"; each command checks only
the settings it reads; list-of-names settings take a name, a comma list or JSON."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError
from routeyard.consumers import settings_errors
from routeyard.consumers.cli.main import main
from routeyard.consumers.settings import Settings

CATALOG = "agents:\n  - name: A\n    description: answers questions about a\n"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("ROUTEYARD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.yaml").write_text(CATALOG, encoding="utf-8")


def errors_of(monkeypatch: pytest.MonkeyPatch, **variables: str) -> list[str]:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    return settings_errors.problems(caught.value, {k.upper(): v for k, v in variables.items()})


def test_every_setting_has_its_variable_name() -> None:
    known = settings_errors.variables()
    assert known["ROUTEYARD_ROUTER__MAX_BATCH"].path == ("router", "max_batch")
    assert {"ROUTEYARD_KAFKA__BOOTSTRAP", "ROUTEYARD_TOPIC_PREFIX", "ROUTEYARD_SEMANTIC__MODEL"} <= known.keys()
    assert known["ROUTEYARD_KAFKA__SASL_PASSWORD"].secret and not known["ROUTEYARD_KAFKA__BOOTSTRAP"].secret


@pytest.mark.parametrize(
    ("variables", "line"),
    [
        ({"ROUTEYARD_ROUTER__MAX_BATCH": "abc"}, "ROUTEYARD_ROUTER__MAX_BATCH='abc': expected an integer"),
        ({"ROUTEYARD_ROUTER__MAX_BATCH": "0"}, "ROUTEYARD_ROUTER__MAX_BATCH='0': expected a number >= 1"),
        (
            {"ROUTEYARD_ROUTER__ENGINE": "semantik"},
            "ROUTEYARD_ROUTER__ENGINE='semantik': expected 'rules', 'vllm', 'openai', 'semantic' or 'sim'",
        ),
        (
            {"ROUTEYARD_ROUTER__FALLBACK": "rules,rulez"},
            "ROUTEYARD_ROUTER__FALLBACK='rules,rulez': item 'rulez': expected 'rules', 'vllm', 'openai', 'semantic' or"
            " 'sim'",
        ),
        (
            {"ROUTEYARD_KAFKA__SSL_CHECK_HOSTNAME": "maybe"},
            "ROUTEYARD_KAFKA__SSL_CHECK_HOSTNAME='maybe': expected true",
        ),
    ],
)
def test_one_line_per_problem_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], line: str
) -> None:
    (problem,) = errors_of(monkeypatch, **variables)
    assert problem.startswith(line)


def test_a_section_validator_names_the_sections_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    (problem,) = errors_of(
        monkeypatch, ROUTEYARD_KAFKA__SECURITY_PROTOCOL="SASL_SSL", ROUTEYARD_KAFKA__SASL_PASSWORD="pw"
    )
    assert problem == (
        "ROUTEYARD_KAFKA__SECURITY_PROTOCOL='SASL_SSL', ROUTEYARD_KAFKA__SASL_PASSWORD=<secret>: SASL_SSL needs "
        "ROUTEYARD_KAFKA__SASL_MECHANISM, ROUTEYARD_KAFKA__SASL_USERNAME and ROUTEYARD_KAFKA__SASL_PASSWORD"
    )
    assert "pw" not in problem


@pytest.mark.parametrize(
    ("value", "expected"), [("rules", ["rules"]), ("rules, semantic", ["rules", "semantic"]), ('["vllm"]', ["vllm"])]
)
def test_list_of_names_settings_take_a_name_a_comma_list_or_json(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("ROUTEYARD_ROUTER__FALLBACK", value)
    monkeypatch.setenv("ROUTEYARD_ROUTER__TENANTS", "acme,globex")
    settings = Settings()
    assert settings.router.fallback == expected
    assert settings.router.tenants == frozenset({"acme", "globex"})


def test_unknown_names_get_a_did_you_mean() -> None:
    warnings = settings_errors.unknown(
        ["ROUTEYARD_KAFKA_BOOTSTRAP", "ROUTEYARD_ROUTER__MAXBATCH", "ROUTEYARD_SECRETS_DIR", "HOME"]
    )
    assert warnings == [
        "ROUTEYARD_KAFKA_BOOTSTRAP is not a routeyard setting, ignored; did you mean ROUTEYARD_KAFKA__BOOTSTRAP?",
        "ROUTEYARD_ROUTER__MAXBATCH is not a routeyard setting, ignored; did you mean ROUTEYARD_ROUTER__MAX_BATCH?",
    ]
    assert settings_errors.unknown(["routeyard_vllm__engine_kwargs__max_model_len"]) == []  # a dict's key


# -- the command ----------------------------------------------------------------------------------


def test_a_malformed_setting_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ROUTEYARD_ROUTER__MAX_BATCH", "abc")
    assert main(["--bootstrap", "127.0.0.1:1", "send", "c1", "hi"]) == 2
    assert capsys.readouterr().err == "routeyard: ROUTEYARD_ROUTER__MAX_BATCH='abc': expected an integer\n"


def test_a_json_setting_that_is_not_json_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ROUTEYARD_SEMANTIC__CLOSINGS", "bye")
    assert main(["tune", "cases.jsonl"]) == 2
    assert capsys.readouterr().err.startswith("routeyard: ROUTEYARD_SEMANTIC__CLOSINGS='bye': expected JSON")


@pytest.mark.parametrize("argv", [["catalog", "check", "x.yaml"], ["schema", "export", "schemas"]])
def test_commands_check_only_the_settings_they_read(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    monkeypatch.setenv("ROUTEYARD_ROUTER__ENGINE", "semantik")
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err == (
        "routeyard: warning: ROUTEYARD_ROUTER__ENGINE='semantik': expected 'rules', 'vllm', 'openai', "
        "'semantic' or 'sim' (ignored: not used by this command)\n"
    )


def test_unknown_names_are_warned_about_in_the_environment_and_the_env_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("ROUTEYARD_KAFKA_BOOTSTRAP", "kafka:9092")
    (tmp_path / "my.env").write_text("ROUTEYARD_ROUTER__MAXBATCH=3\n", encoding="utf-8")
    assert main(["--env-file", str(tmp_path / "my.env"), "catalog", "check", "x.yaml"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "routeyard: warning: ROUTEYARD_KAFKA_BOOTSTRAP is not a routeyard setting, ignored; "
        "did you mean ROUTEYARD_KAFKA__BOOTSTRAP?",
        "routeyard: warning: ROUTEYARD_ROUTER__MAXBATCH is not a routeyard setting, ignored; "
        "did you mean ROUTEYARD_ROUTER__MAX_BATCH?",
    ]


def test_a_bad_log_level_is_a_one_line_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--log-level", "debugg", "catalog", "check", "x.yaml"])
    assert caught.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "--log-level: invalid choice: 'DEBUGG'" in line and "'DEBUG', 'INFO', 'WARNING'" in line
