"""``routeyard eval``: reports, plots, --compare and errors, on small datasets written per test.

No servers: the rules engine decides in-process. The dataset carries no rules, so the rules engine
routes nothing and every expected-empty case is right; the figures below follow from that.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from routeyard.consumers.cli.main import main

CLINC = Path("/work/shared/data/clinc150_val_routing.jsonl.gz")
AGENTS = [
    {"name": "Weather", "description": "Forecasts and current conditions"},
    {"name": "Food", "description": "Restaurant search and bookings"},
]
CASES = [  # (text, expected routes, tags)
    ("will it rain tomorrow in Oslo?", ["Weather"], ["first_turn"]),
    ("book a table for two", ["Food"], ["first_turn"]),
    ("weather in Rome and a pizza place there", ["Weather", "Food"], ["multi_intent"]),
    ("thanks, bye", [], ["negative"]),
    ("tell me a joke", [], ["negative", "chit_chat"]),
    ("ok", [], ["negative"]),
]
QUALITY_ROWS = ("cases", "exact set-match", "failed", "no route", "multi-intent")


def _dataset(path: Path, lines: list[str] | None = None) -> Path:
    if lines is None:
        lines = [
            json.dumps(
                {
                    "id": f"t{i}",
                    "agents": AGENTS,
                    "conversation": [{"role": "user", "content": text}],
                    "expected_routes": expected,
                    "tags": tags,
                    "meta": {},
                }
            )
            for i, (text, expected, tags) in enumerate(CASES)
        ]
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    return path


def _runs(out: Path) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = json.loads((out / "report.json").read_text())["runs"]
    return runs


def test_eval_writes_json_and_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["eval", str(_dataset(tmp_path / "cases.jsonl.gz")), "--engine", "rules", "--out", str(out)]) == 0
    (run,) = _runs(out)
    report = run["report"]
    assert run["name"] == "rules"
    assert (report["n"], report["correct"], report["failed"]) == (6, 3, 0)
    assert report["accuracy"] == pytest.approx(0.5)
    assert report["per_tag"]["negative"] == {"n": 3, "correct": 3, "accuracy": 1.0}
    assert report["per_tag"]["first_turn"]["accuracy"] == 0.0
    assert report["no_route"] | {"f1": 0} == {"tp": 3, "fp": 3, "fn": 0, "precision": 0.5, "recall": 1.0, "f1": 0}
    assert report["multi_intent"]["fn"] == 1
    assert report["multi_intent_accuracy"] == 0.0
    assert report["per_agent"]["Weather"]["fn"] == 2
    assert report["confusion"] == {"(none)": {"(none)": 3}, "Food": {"(none)": 1}, "Weather": {"(none)": 1}}
    assert report["decided_by"] == {"rules": 6}
    assert report["decisions_per_s"] > 0
    stdout = capsys.readouterr().out
    assert "| exact set-match accuracy | 50.0% |" in stdout
    assert (out / "report.md").read_text().strip() == stdout.strip()


def test_eval_draws_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    assert main(["eval", str(_dataset(tmp_path / "cases.jsonl.gz")), "--engine", "rules", "--out", str(out)]) == 0
    for name in ("tag_accuracy.png", "confusion.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_an_engine_with_itself_gives_zero_deltas(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    dataset = str(_dataset(tmp_path / "cases.jsonl.gz"))
    assert main(["eval", dataset, "--engine", "rules", "--compare", "rules", "--out", str(out)]) == 0
    first, second = _runs(out)
    assert (first["name"], second["name"]) == ("rules", "rules #2")
    timing = {"latency_p50_ms", "latency_p99_ms", "decisions_per_s", "batch_p50_ms", "batch_p99_ms"}
    assert {k: v for k, v in first["report"].items() if k not in timing} == {
        k: v for k, v in second["report"].items() if k not in timing
    }
    stdout = capsys.readouterr().out
    compare = stdout.split("## rules vs rules #2", 1)[1].split("\n## ", 1)[0]
    deltas = [row.split(" | ") for row in compare.splitlines() if row.startswith("| ") and "---" not in row]
    quality = [row for row in deltas if row[0].removeprefix("| ").startswith(QUALITY_ROWS)]
    assert len(quality) == 10
    assert {row[-1] for row in quality} <= {"+0 |", "+0.0 pp |", "- |"}
    assert "+0.0 pp |" in {row[-1] for row in deltas if row[0] == "| negative"}
    if (out / "tag_accuracy.png").exists():
        assert (out / "confusion-2.png").exists()


def test_compare_with_an_env_file(tmp_path: Path) -> None:
    env = tmp_path / "rules-only.env"
    env.write_text("ROUTEYARD_ROUTER__ENGINE=rules\n")
    out = tmp_path / "out"
    dataset = str(_dataset(tmp_path / "cases.jsonl.gz"))
    assert main(["eval", dataset, "--engine", "rules", "--compare", str(env), "--out", str(out)]) == 0
    assert [run["name"] for run in _runs(out)] == ["rules", "rules-only.env"]


def test_progress_bar_and_default_output_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["eval", str(_dataset(tmp_path / "cases.jsonl.gz")), "--engine", "rules", "--progress"]) == 0
    assert "rules [##############################] 6/6" in capsys.readouterr().err
    (out,) = tmp_path.glob("eval-*")
    assert (out / "report.json").exists()


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (None, "cannot read dataset"),
        (['{"id": "x"}'], ".jsonl.gz:1: Object missing required field"),
        ([], "no cases"),
    ],
)
def test_bad_dataset_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str] | None, message: str
) -> None:
    path = tmp_path / "cases.jsonl.gz"
    if lines is not None:
        _dataset(path, lines)
    assert main(["eval", str(path), "--engine", "rules", "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unknown_compare_target_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dataset = str(_dataset(tmp_path / "cases.jsonl.gz"))
    assert main(["eval", dataset, "--compare", "gpt-9", "--out", str(tmp_path / "out")]) == 2
    assert "neither an engine" in capsys.readouterr().err


@pytest.mark.skipif(not CLINC.exists(), reason=f"{CLINC} is not here")
def test_first_200_clinc_cases_through_the_rules_engine(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["eval", str(CLINC), "--engine", "rules", "--limit", "200", "--out", str(out)]) == 0
    (run,) = _runs(out)
    report = run["report"]
    assert report["n"] == 200
    assert 0.0 <= report["accuracy"] <= 1.0
    assert all(0.0 <= tag["accuracy"] <= 1.0 for tag in report["per_tag"].values())
    assert report["failed"] == 0


CATALOG_YAML = """
agents:
  - name: Weather
    description: Forecasts and current conditions
    rules: {keywords: [rain, weather]}
  - name: Food
    description: Restaurant search and bookings
    rules: {keywords: [table, pizza]}
"""


def test_eval_scores_a_real_catalog_with_its_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The dataset's agents have no rules (the rules engine routes nothing: 50%); the catalog's do."""
    (tmp_path / "agents.yaml").write_text(CATALOG_YAML)
    data, out = str(_dataset(tmp_path / "cases.jsonl.gz")), tmp_path / "out"
    assert main(["eval", data, "--engine", "rules", "--out", str(out / "a")]) == 0
    assert "warning: no agent has rules" in capsys.readouterr().err
    args = ["eval", data, "--engine", "rules", "--catalog", str(tmp_path / "agents.yaml"), "--out", str(out / "b")]
    assert main(args) == 0
    assert "warning" not in capsys.readouterr().err
    before, after = (_runs(out / x)[0]["report"] for x in ("a", "b"))
    assert (before["accuracy"], after["accuracy"]) == (0.5, 1.0)


def test_eval_catalog_must_hold_the_expected_agents(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "agents.yaml").write_text("agents:\n  - name: Weather\n    description: Forecasts\n")
    data = str(_dataset(tmp_path / "cases.jsonl.gz"))
    assert main(["eval", data, "--engine", "rules", "--catalog", str(tmp_path / "agents.yaml")]) == 2
    assert capsys.readouterr().err.strip().endswith("not in the catalog " + str(tmp_path / "agents.yaml") + ": Food")


def test_eval_scores_the_continuation_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An answer to Food's question: the speaker comes from the previous case of the dialogue."""
    first = [{"role": "user", "content": "book a table for two"}]
    second = [*first, {"role": "assistant", "content": "For what time?"}, {"role": "user", "content": "7 pm"}]
    lines = [
        json.dumps(
            {"id": i, "agents": AGENTS, "conversation": c, "expected_routes": ["Food"], "meta": {"dialogue_id": 1}}
        )
        for i, c in (("t0", first), ("t1", second))
    ]
    (tmp_path / "agents.yaml").write_text(CATALOG_YAML)
    data, out = str(_dataset(tmp_path / "cases.jsonl.gz", lines)), tmp_path / "out"
    common = ["eval", data, "--engine", "rules", "--catalog", str(tmp_path / "agents.yaml")]
    assert main([*common, "--no-continuation", "--out", str(out / "off")]) == 0
    assert main([*common, "--out", str(out / "on")]) == 0
    off, on = (_runs(out / x)[0]["report"] for x in ("off", "on"))
    assert (off["accuracy"], on["accuracy"], on["continued"], on["continued_right"]) == (0.5, 1.0, 1, 1)
    assert "| continuations (sent back to the agent that asked) | 1 |" in capsys.readouterr().out


def test_eval_help_documents_the_reserved_tags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = capsys.readouterr().out
    assert "multi_intent       2+ agents expected" in text and '"per batch" is one engine call' in text
