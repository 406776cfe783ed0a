"""Settings for one command: read once, checked only where the command reads them.

    settings = load(env_file, uses=("kafka", "topic_prefix"))

Each command declares the sections it reads (``uses``; None: all of them). A malformed setting in
a section it uses raises SettingsError (one line per problem, exit 2); one in a section it does not
use is a warning on stderr and that section keeps its defaults, so ``routeyard catalog check`` runs
whatever ``ROUTEYARD_ROUTER__ENGINE`` says. ROUTEYARD_* names that no setting reads are warned about
("did you mean ...?"), in the environment and in the env file alike.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError as UndecodableSetting
from routeyard.consumers import settings_errors
from routeyard.consumers.errors import SettingsError, SettingsFileError
from routeyard.consumers.settings import SECRETS_DIR_VARIABLE, Settings

Uses = Collection[str] | None
"""Top-level field names a command reads (``kafka``, ``router``, ``topic_prefix``...); None: all."""


def load(env_file: Path | None, uses: Uses = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Settings from the environment, ``env_file`` and the secrets directory, checked as above.
    ``overrides`` (the command line's: ``{"kafka": {"bootstrap": ...}, "topic_prefix": ...}``) win."""
    if env_file is not None and not env_file.is_file():
        raise SettingsFileError(f"--env-file {env_file}: no such file")
    overrides = dict(overrides or {})
    given = given_values(os.environ, env_file)
    for warning in settings_errors.unknown(given):
        warn(warning)
    kwargs = dict(overrides)
    for _ in Settings.model_fields:  # each round defaults at least one more section
        try:
            return _build(env_file, kwargs)
        except (ValidationError, UndecodableSetting) as exc:
            unused = _unused(_problems(exc, given), uses)
        for section, lines in unused.items():
            for line in lines:
                warn(f"{line} (ignored: not used by this command)")
            kwargs[section] = _default(section, overrides.get(section))
    return _build(env_file, kwargs)


def _default(section: str, override: Any) -> Any:
    """``section`` as if no variable set it (a model instance replaces, a dict would merge)."""
    field = Settings.model_fields[section]
    model = settings_errors.model_of(field.annotation)
    if model is None:
        return override if override is not None else field.get_default(call_default_factory=True)
    return model(**(override or {}))


def _build(env_file: Path | None, kwargs: dict[str, Any]) -> Settings:
    try:
        return Settings(_env_file=env_file, **kwargs) if env_file else Settings(**kwargs)
    except (ValidationError, UndecodableSetting):
        raise
    except ValueError as exc:  # e.g. ROUTEYARD_SECRETS_DIR is not a directory
        raise SettingsError([str(exc)]) from None


def _problems(exc: ValidationError | UndecodableSetting, given: Mapping[str, str]) -> list[tuple[str, str]]:
    """(top-level field, line) per problem; a whole-settings validator's field is ``""``."""
    if isinstance(exc, UndecodableSetting):
        found = re.search(r'field "([a-z_]+)"', str(exc))
        section = found[1] if found else ""
        return [(section, line) for line in settings_errors.undecodable(section, given)]
    lines = settings_errors.problems(exc, given)
    return [(str(e["loc"][0]) if e["loc"] else "", line) for e, line in zip(exc.errors(), lines, strict=True)]


def _unused(problems: list[tuple[str, str]], uses: Uses) -> dict[str, list[str]]:
    """Raise SettingsError for the problems of sections the command uses; return the others."""
    used = [line for section, line in problems if uses is None or not section or section in uses]
    if used:
        raise SettingsError(used)
    unused: dict[str, list[str]] = {}
    for section, line in problems:
        unused.setdefault(section, []).append(line)
    return unused


def given_values(environ: Mapping[str, str], env_file: Path | None) -> dict[str, str]:
    """ROUTEYARD_* name (upper case) -> the text it is set to; the environment wins over the env
    file, which wins over the secrets directory (as in Settings)."""
    values = _secret_files(environ.get(SECRETS_DIR_VARIABLE))
    if env_file is not None:
        from dotenv import dotenv_values

        values.update({k.upper(): v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update({k.upper(): v for k, v in environ.items()})
    return {k: v for k, v in values.items() if k.startswith(settings_errors.PREFIX)}


def _secret_files(folder: str | None) -> dict[str, str]:
    if not folder or not Path(folder).is_dir():
        return {}
    return {f.name.upper(): "<secret>" for f in Path(folder).iterdir() if f.is_file()}


def warn(message: str) -> None:
    print(f"routeyard: warning: {message}", file=sys.stderr)
