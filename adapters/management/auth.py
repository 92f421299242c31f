"""HTTP basic auth against the broker's users, with RabbitMQ's management tags.

``administrator`` may do everything; ``monitoring`` may read everything; ``management`` (and
``policymaker``) may read and act within the vhosts the user may open. No credentials: 401 with
``WWW-Authenticate: Basic``; a wrong password: 401 with a JSON error; a missing right: 403.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any

from aiohttp import web

from manifold.broker.errors import BrokerError

from .errors import json_error

MANAGEMENT_TAGS = ("administrator", "monitoring", "management", "policymaker")
REALM = 'Basic realm="Manifold Management"'
#: paths served without credentials (the page itself signs in with its own requests)
PUBLIC_PREFIXES = ("/static/", "/js/", "/css/")
PUBLIC_PATHS = ("/", "/index.html", "/favicon.ico", "/api/manifold/ping")


class Principal:
    """The signed-in user of one request and what their tags allow."""

    def __init__(self, user: Any, tags: tuple[str, ...], vhosts: set[str]):
        self.user = user
        self.name: str = user.name
        self.tags = tags
        #: the vhosts the user has permissions on (broker/access.py)
        self.vhosts = vhosts

    @property
    def is_admin(self) -> bool:
        return "administrator" in self.tags

    @property
    def sees_everything(self) -> bool:
        return self.is_admin or "monitoring" in self.tags

    def can_see_vhost(self, vhost: str) -> bool:
        return self.sees_everything or vhost in self.vhosts

    def can_act_in_vhost(self, vhost: str) -> bool:
        """Tag-level right; the operation itself is then checked against the user's
        configure/write/read permissions in that vhost, as RabbitMQ does."""
        return vhost in self.vhosts


def _credentials(request: web.Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


async def authenticate(broker: Any, request: web.Request) -> Principal:
    """The request's principal, or an HTTP error response raised as an exception. A refused
    login is answered after the broker's back-off delay for its address (broker/access.py)."""
    creds = _credentials(request)
    if creds is None:
        raise json_error(401, "not_authorised", "Login failed: send HTTP basic credentials",
                         headers={"WWW-Authenticate": REALM})
    peer = request.remote
    try:
        user = broker.authenticate(creds[0], creds[1], peer)
    except BrokerError as exc:
        await asyncio.sleep(getattr(exc, "delay_s", 0.0))
        raise json_error(401, "not_authorised", exc.text)
    tags = tuple(user.tags)
    if not any(tag in MANAGEMENT_TAGS for tag in tags):
        raise json_error(403, "not_authorised",
                         f"user '{user.name}' has no management tag "
                         f"({', '.join(MANAGEMENT_TAGS)})")
    return Principal(user, tags, broker.access.vhosts_of(user.name))


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise json_error(403, "not_authorised", "Not administrator user")


def require_read(principal: Principal, vhost: str) -> None:
    if not principal.can_see_vhost(vhost):
        raise json_error(403, "not_authorised", f"access to vhost '{vhost}' refused for user "
                                                f"'{principal.name}'")


def require_write(principal: Principal, vhost: str) -> None:
    if not principal.can_act_in_vhost(vhost):
        raise json_error(403, "not_authorised",
                         f"user '{principal.name}' may not change vhost '{vhost}'"
                         + (" (monitoring is read-only)" if "monitoring" in principal.tags
                            else ""))
