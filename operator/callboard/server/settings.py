"""Typed settings of the node HTTP API (what ``callboard serve`` maps its flags into)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from callboard._http import DEFAULT_MAX_BODY_BYTES
from callboard.config import read_token, setting
from callboard.errors import ConfigurationError
from callboard.registry.paging import MAX_PAGE_SIZE

__all__ = ["ServerSettings"]


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """HTTP concerns only; the launcher and the registry have their own settings."""

    auth_token: str | None = setting(
        None,
        env="CALLBOARD_API_TOKEN",
        flag="api-token",
        help="Require this bearer token.",
        default_text="off",
    )
    """Bearer token required by every route except ``/health`` and ``/ready`` (probes carry
    no secret). None turns auth off: the default, as a node API usually sits on a cluster
    network; set one whenever the port is reachable from outside."""
    auth_token_file: str | None = setting(
        None,
        env="CALLBOARD_API_TOKEN_FILE",
        flag="api-token-file",
        help="File holding that token (a mounted Secret); read at start.",
    )
    """Where to read ``auth_token`` from instead (not both): a file keeps the token out of the
    process environment, which ``/proc`` and crash reports show."""
    can_start_session: str | None = setting(
        None,
        env="CALLBOARD_CAN_START_SESSION",
        metavar="MODULE:FUNCTION",
        default_text="allow all",
        help="Hook (FastAPI dependency, gets call_id) that may refuse a start: raise HTTPException(403).",
    )
    can_close_session: str | None = setting(
        None,
        env="CALLBOARD_CAN_CLOSE_SESSION",
        metavar="MODULE:FUNCTION",
        default_text="allow all",
        help="Hook that may refuse a close (DELETE, POST .../close).",
    )
    can_view_session: str | None = setting(
        None,
        env="CALLBOARD_CAN_VIEW_SESSION",
        metavar="MODULE:FUNCTION",
        default_text="allow all",
        help="Hook that may refuse reading a call's sessions (GET /sessions then needs ?call_id=).",
    )
    can_view_metrics: str | None = setting(
        None,
        env="CALLBOARD_CAN_VIEW_METRICS",
        metavar="MODULE:FUNCTION",
        default_text="allow all",
        help="Hook that may refuse reading a session's metrics.",
    )
    """The four authorization hooks of :mod:`callboard.server.hooks`, as import paths; in
    Python, pass :class:`~callboard.server.hooks.AuthorizationHooks` to ``create_app``."""
    cors_origins: tuple[str, ...] = setting(
        (),
        env="CALLBOARD_CORS_ORIGINS",
        flag="cors-origin",
        help="Allowed browser origin (repeat; env: space-separated). Never with credentials.",
    )
    """Browser origins allowed to call the API (``https://app.example.com``, or ``*``).
    Empty adds no CORS headers at all. Credentials (cookies) are never allowed, so even
    ``*`` cannot leak a session: the token travels in the Authorization header."""
    default_page_size: int = 100
    """Sessions per page of ``GET /sessions`` when the client names no ``limit``."""
    max_page_size: int = 1000
    """Largest ``limit`` accepted: one page stays one bounded registry read."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Largest request body accepted (422 beyond): a start request is a few bytes."""
    ready_timeout: float = 1.0
    """Seconds ``/ready`` waits for the registry's ping: Kubernetes probes time out at 1 s
    by default, and a slow answer is as bad as none for taking traffic."""

    @property
    def bearer_token(self) -> str | None:
        """The token every route but the probes requires (from the value or the file); None: off."""
        return read_token(self.auth_token, self.auth_token_file, "CALLBOARD_API_TOKEN")

    def __post_init__(self) -> None:
        if self.auth_token is not None and not self.auth_token.strip():
            raise ConfigurationError("auth_token must not be blank (use None to turn auth off)")
        if self.auth_token is not None and self.auth_token_file is not None:
            raise ConfigurationError(
                "CALLBOARD_API_TOKEN: set either it or CALLBOARD_API_TOKEN_FILE, not both"
            )
        self.bearer_token  # noqa: B018 - reads the file now, so a missing one is a start-up error
        if not 1 <= self.default_page_size <= self.max_page_size:
            raise ConfigurationError("default_page_size must be between 1 and max_page_size")
        if self.max_page_size > MAX_PAGE_SIZE:
            raise ConfigurationError(f"max_page_size must be at most {MAX_PAGE_SIZE}")
        if self.ready_timeout <= 0:
            raise ConfigurationError("ready_timeout must be > 0")
        for origin in self.cors_origins:
            if origin == "*":
                continue
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
                raise ConfigurationError(
                    f"CORS origin {origin!r} must be '*' or scheme://host[:port], e.g. https://app.example.com"
                )
