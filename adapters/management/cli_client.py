"""The CLI's HTTP client for the management API (stdlib urllib: keep-alive is not worth a
dependency here), with errors that say what to do and map to exit codes."""
from __future__ import annotations

import base64
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

# Exit codes (documented in README "Operations"): 0 success.
EXIT_ERROR = 1         # the broker refused the request (bad input, precondition failed)
EXIT_USAGE = 2         # bad command line (argparse's own code)
EXIT_UNREACHABLE = 3   # no answer from the management API
EXIT_AUTH = 4          # wrong credentials or missing rights (401, 403)
EXIT_NOT_FOUND = 5     # the object does not exist (404)
EXIT_PARTIAL = 6       # done, but some of it was not honoured (definitions import)


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_ERROR):
        super().__init__(message)
        self.code = code


def quote(part: str) -> str:
    """One path segment: ``/`` (the default vhost) becomes ``%2F``, as RabbitMQ expects."""
    return urllib.parse.quote(part, safe="")


class Client:
    def __init__(self, url: str, user: str, password: str, timeout_s: float = 30.0):
        self.url = url.rstrip("/")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Accept": "application/json"}
        self.user = user
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, body: Any = None,
                headers: dict | None = None) -> Any:
        data = None
        all_headers = dict(self.headers)
        if body is not None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc, method, path) from None
        except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(f"cannot reach the management API at {self.url}: {reason}. Is the "
                           "broker running with its management port open? Set --url or "
                           "MANIFOLD_URL.", EXIT_UNREACHABLE) from None
        return json.loads(raw) if raw.strip() else None

    def _http_error(self, exc: urllib.error.HTTPError, method: str, path: str) -> CliError:
        try:
            reason = json.loads(exc.read()).get("reason", "")
        except (ValueError, AttributeError):
            reason = exc.reason
        if exc.code == 401:
            return CliError(f"login refused for user '{self.user}': {reason}. Check --user and "
                            "--password (or MANIFOLD_USER, MANIFOLD_PASSWORD).", EXIT_AUTH)
        if exc.code == 403:
            return CliError(f"user '{self.user}' may not do this: {reason}. An administrator "
                            "can add the tag or vhost permission.", EXIT_AUTH)
        if exc.code == 404:
            return CliError(f"not found: {reason or path}. Check the name and --vhost; "
                            "`manifold list` shows what exists.", EXIT_NOT_FOUND)
        return CliError(f"the broker refused {method} {path} (HTTP {exc.code}): {reason}")

    def get(self, path: str) -> Any:
        return self.request("GET", path)
