"""The error tree is one module's: every user-facing error is in ``routeyard.consumers.errors``,
drawn in its docstring, and the command's exit status comes from one map."""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaConnectionError
from redis import exceptions as redis_exceptions
from redis.exceptions import ConnectionError as RedisConnectionError
from routeyard.consumers import errors
from routeyard.consumers.cli.exits import exit_status
from routeyard.consumers.cli.main import main
from routeyard.consumers.retry import Action, classify
from routeyard.router import errors as router_errors


@pytest.mark.parametrize("name", errors.__all__)
def test_every_error_is_a_routeyard_error_drawn_in_the_tree(name: str) -> None:
    cls = getattr(errors, name)
    assert issubclass(cls, errors.RouteyardError)
    assert f"-- {name} " in errors.__doc__ or name == "RouteyardError"


@pytest.mark.parametrize("name", router_errors.__all__)
def test_router_errors_are_re_exported_not_copied(name: str) -> None:
    assert getattr(errors, name) is getattr(router_errors, name)
    assert name in errors.__all__


def test_errors_defined_beside_their_raisers_are_the_same_classes() -> None:
    from routeyard.consumers.client import TurnRejected, TurnTimeout
    from routeyard.consumers.tools.replay import ReplayError
    from routeyard.router.catalog import CatalogError
    from routeyard.router.evaluation.evaluate import DatasetError

    assert (errors.TurnRejected, errors.TurnTimeout) == (TurnRejected, TurnTimeout)
    assert (errors.ReplayError, errors.CatalogError, errors.DatasetError) == (ReplayError, CatalogError, DatasetError)


@pytest.mark.parametrize(
    ("exc", "code", "message"),
    [
        (errors.CatalogError("bad.yaml: no agents"), 2, "routeyard: bad.yaml: no agents"),
        (errors.DlqError("no dead letter '9:9'"), 2, "routeyard: no dead letter '9:9'"),
        (errors.SettingsFileError("--env-file x: no such file"), 2, "routeyard: --env-file x: no such file"),
        (errors.EncoderUnavailable("needs onnxruntime"), 2, "routeyard: needs onnxruntime (or choose another engine"),
        (errors.TurnTimeout(["e1"], 15.0), 1, "routeyard send: no response in 15 s; see: routeyard explain e1"),
        (errors.TurnTimeout(["e1", "e2"], 2.5), 1, "routeyard send: no response to 2 turns in 2.5 s; see: routeyard"),
        (errors.CannotReach("agent", "cannot reach Redis at r"), 1, "routeyard agent: cannot reach Redis at r"),
        (errors.TurnRejected("e1", "no user message"), 1, "routeyard send: turn e1 rejected: no user message"),
        (RedisConnectionError("refused"), 1, "routeyard: cannot connect: refused"),
        (KafkaConnectionError("refused"), 1, "routeyard: cannot connect: KafkaConnectionError: refused"),
        (KeyboardInterrupt(), 130, ""),
    ],
)
def test_exit_status(exc: BaseException, code: int, message: str) -> None:
    status = exit_status(exc)
    assert status is not None and status.code == code and status.message.startswith(message)


@pytest.mark.parametrize("exc", [ValueError("x"), errors.EngineDead("gone"), RuntimeError("y")])
def test_other_errors_are_not_explained_but_propagate(exc: BaseException) -> None:
    assert exit_status(exc) is None


def test_the_command_exits_by_the_map(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--env-file", "/nonexistent/routeyard.env", "catalog", "check", "x.yaml"]) == 2
    assert capsys.readouterr().err == "routeyard: --env-file /nonexistent/routeyard.env: no such file\n"


@pytest.mark.parametrize(
    ("exc", "action"),
    [
        (errors.ShutdownTimeout("late"), Action.EXIT),
        (errors.EmbeddedServerError("no wheel"), Action.EXIT),
        (errors.DependencyUnavailable("redis"), Action.RETRY),
        (errors.DatasetError("bad line"), Action.DEAD_LETTER),
    ],
)
def test_the_tree_says_what_a_worker_does(exc: BaseException, action: Action) -> None:
    assert classify(exc) is action


@pytest.mark.parametrize(
    ("exc", "action", "exit_code"),
    [
        (redis_exceptions.AuthenticationError("WRONGPASS"), Action.EXIT, 1),
        (redis_exceptions.AuthorizationError("NOPERM"), Action.EXIT, 1),
        (redis_exceptions.ConnectionError("refused"), Action.RETRY, 1),
        (redis_exceptions.BusyLoadingError("LOADING"), Action.RETRY, 1),
        (redis_exceptions.TimeoutError("timed out"), Action.RETRY, None),
        (redis_exceptions.ReadOnlyError("READONLY"), Action.RETRY, None),
        (redis_exceptions.ResponseError("WRONGTYPE"), Action.DEAD_LETTER, None),
    ],
)
def test_redis_errors_are_read_by_the_stores_room(exc: BaseException, action: Action, exit_code: int | None) -> None:
    assert classify(exc) is action
    status = exit_status(exc)
    assert (status.code if status else None) == exit_code
