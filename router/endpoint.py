"""The catalog's fields for agents by URL: an endpoint and the variable that holds its token.

Checked when the catalog loads, so a URL with credentials in it or a scheme other than http(s)
fails at boot with one line, never when the first task is sent.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator

__all__ = ["MAX_URL_CHARS", "EnvName", "HttpUrl"]

MAX_URL_CHARS = 2000
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def http_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL with a host and without credentials."""
    if len(url) > MAX_URL_CHARS or any(c.isspace() or ord(c) < 32 for c in url):
        raise ValueError(f"url must be one line of at most {MAX_URL_CHARS} characters without spaces")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises on a port that is not a number in range
    except ValueError as exc:
        raise ValueError(f"url {url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"url {url!r} must be an absolute http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("url must not hold credentials: put the token in an environment variable named by api_key_env")
    return url


def env_name(name: str) -> str:
    if not _ENV_NAME.match(name):
        raise ValueError(f"api_key_env {name!r} is not an environment variable name (letters, digits, '_')")
    return name


HttpUrl = Annotated[str, AfterValidator(http_url)]
EnvName = Annotated[str, AfterValidator(env_name)]
