"""One HTTP front door for every AWS API: request -> (service, protocol, operation) -> handler.

AWS SDKs speak four wire protocols, and the request says which:
- ``json``: POST with ``X-Amz-Target: <Prefix>.<Operation>`` and a JSON body (SQS JSON 1.0,
  Kinesis and Firehose JSON 1.1);
- ``query``: form-encoded ``Action=...`` in the body (POST) or the URL (GET), answered in XML (SQS's
  older protocol, SNS). The service is taken from the SigV4 credential scope, else the ``Version``;
- ``rest``: anything else (S3, path-style).

Errors are raised as :class:`AwsError` anywhere below a handler and rendered here in the request's
own protocol, so a JSON client gets ``__type`` and a query client gets ``<ErrorResponse>``.
"""
from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from xml.sax.saxutils import escape

from aiohttp import web

log = logging.getLogger("manifold.aws")

REGION = "us-east-1"
ACCOUNT_ID = "000000000000"

# SigV4: "AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/SERVICE/aws4_request, SignedHeaders=..., ..."
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request")
# The query protocol's Version parameter, for unsigned requests that carry no credential scope.
_QUERY_VERSIONS = {"2012-11-05": "sqs", "2010-03-31": "sns"}


class AwsError(Exception):
    """An error as AWS reports it: ``code`` (e.g. ``QueueDoesNotExist``), HTTP ``status``, and
    whether the caller (``Sender``) or the server (``Receiver``) is at fault. ``query_code`` is the
    code the query protocol uses where it differs (SQS's ``AWS.SimpleQueueService.*`` codes)."""

    def __init__(self, code: str, message: str, status: int = 400, *, sender: bool = True,
                 query_code: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.sender = sender
        self.query_code = query_code or code


#: what reading a parameter of the wrong shape raises in a handler (a list where a string goes,
#: text where a number goes): the request's fault, answered as AWS answers a body it cannot
#: deserialize, never as a 500
WRONG_SHAPE = (TypeError, ValueError, AttributeError, KeyError, IndexError)


def wrong_shape(exc: Exception) -> AwsError:
    return AwsError("SerializationException", f"a request parameter has the wrong type or "
                    f"shape ({type(exc).__name__}: {str(exc)[:200]})")


@dataclass
class AwsRequest:
    """What a handler needs to know about one call."""
    http: web.Request
    service: str                   # "sqs", "sns", "kinesis", "firehose", "s3"
    protocol: str                  # "json", "query" or "rest"
    operation: str                 # e.g. "SendMessage"; for rest, the HTTP method
    params: dict[str, Any]         # JSON body, or the flat query parameters
    access_key_id: str | None      # from the SigV4 Authorization header, if signed
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    json_target_prefix: str = ""   # e.g. "AmazonSQS": which JSON service handles it
    user: Any = None               # the signing key's user, set by the SigV4 check (sigv4.py)
    grant: Any = None              # its rights; handlers check with sigv4.require(...)

    @property
    def peer(self) -> str | None:
        return self.http.remote


#: handler(request) -> dict (json), str of XML result members (query), or a web.Response
Handler = Callable[[AwsRequest], Awaitable[Any]]
#: called before every handler; raises AwsError to refuse (signature checks hook in here)
Authenticator = Callable[[AwsRequest], Awaitable[None]]


class AwsApi:
    """The dispatcher. Services register per protocol; the security layer sets ``authenticate``."""

    def __init__(self, broker: Any, settings: Any):
        self.broker = broker
        self.settings = settings
        self.json_services: dict[str, tuple[str, Handler, str]] = {}  # target prefix -> ...
        self.query_services: dict[str, Handler] = {}                  # service -> handler
        self.rest_handler: Handler | None = None
        self.authenticate: Authenticator | None = None
        #: (service, operation) AWS serves without a signature: the SNS links a subscriber
        #: follows (ConfirmSubscription carries its token; GetSigningCertificate is public)
        self.unsigned: set[tuple[str, str]] = set()
        self.app = web.Application(client_max_size=settings.server.max_message_bytes + 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self.on_close: list[Callable[[], Awaitable[None]]] = []
        self.app.on_cleanup.append(self._cleanup)

    # -- registration ---------------------------------------------------------------------------
    def register_json(self, target_prefix: str, service: str, handler: Handler,
                      content_type: str = "application/x-amz-json-1.0") -> None:
        self.json_services[target_prefix] = (service, handler, content_type)

    def register_query(self, service: str, handler: Handler) -> None:
        self.query_services[service] = handler

    def register_rest(self, handler: Handler) -> None:
        self.rest_handler = handler

    async def _cleanup(self, _app: web.Application) -> None:
        for close in self.on_close:
            await close()

    # -- dispatch -------------------------------------------------------------------------------
    async def _dispatch(self, http: web.Request) -> web.StreamResponse:
        try:
            request = await self._classify(http)
        except AwsError as exc:
            return error_response(exc, "query", str(uuid.uuid4()))
        try:
            if self.authenticate is not None and \
                    (request.service, request.operation) not in self.unsigned:
                await self.authenticate(request)
            return await self._call(request)
        except AwsError as exc:
            return error_response(exc, request.protocol, request.request_id)
        except Exception:  # never a bare 500 page: AWS's InternalFailure, and the log says why
            log.exception("%s %s failed", request.service, request.operation)
            return error_response(AwsError("InternalFailure", "internal error", 500, sender=False),
                                  request.protocol, request.request_id)

    async def _classify(self, http: web.Request) -> AwsRequest:
        match = _CREDENTIAL.search(http.headers.get("Authorization", ""))
        key_id, scope_service = (match.group(1), match.group(4)) if match else (None, None)
        target = http.headers.get("X-Amz-Target")
        if target and http.method == "POST":
            prefix, _, operation = target.rpartition(".")
            if prefix not in self.json_services:
                raise AwsError("UnknownOperationException", f"unknown target {target}")
            service = self.json_services[prefix][0]
            raw = await http.read()
            try:
                params = json.loads(raw) if raw else {}
            except ValueError:
                raise AwsError("SerializationException", "body is not valid JSON") from None
            if not isinstance(params, dict):
                raise AwsError("SerializationException", "body must be a JSON object")
            return AwsRequest(http, service, "json", operation, params, key_id,
                              json_target_prefix=prefix)
        params = dict(http.query)
        if http.method == "POST" and http.content_type == "application/x-www-form-urlencoded":
            params.update(await http.post())
        action = params.get("Action")
        service = scope_service if scope_service in self.query_services else None
        service = service or _QUERY_VERSIONS.get(params.get("Version", ""))
        if action and (service or len(self.query_services) == 1 or not self.rest_handler):
            service = service or next(iter(self.query_services), "sqs")
            return AwsRequest(http, service, "query", str(action),
                              {k: str(v) for k, v in params.items()}, key_id)
        return AwsRequest(http, "s3", "rest", http.method, params, key_id)

    async def _call(self, request: AwsRequest) -> web.StreamResponse:
        if request.protocol == "json":
            _, handler, content_type = self.json_services[request.json_target_prefix]
            result = await handler(request)
            if isinstance(result, web.StreamResponse):
                return result
            return web.Response(body=json.dumps(result or {}).encode(), content_type=content_type,
                                headers={"x-amzn-RequestId": request.request_id})
        if request.protocol == "query":
            handler = self.query_services.get(request.service)
            if handler is None:
                raise AwsError("InvalidAction", f"no {request.service} query API here")
            result = await handler(request)
            if isinstance(result, web.StreamResponse):
                return result
            return query_response(request.operation, result or "", request.request_id)
        if self.rest_handler is None:
            raise AwsError("InvalidAction", "unrecognised request", 400)
        return await self.rest_handler(request)


#: query parameters that carry the request's action, version or signature, not its input
ENVELOPE_PARAMS = frozenset({"Action", "Version", "AWSAccessKeyId", "Signature",
                             "SignatureMethod", "SignatureVersion", "Timestamp", "Expires"})


def query_tree(flat: dict[str, str]) -> dict[str, Any]:
    """Undo the query protocol's flattening: ``Tags.member.2.Value=v`` becomes
    ``{"Tags": {"member": {"2": {"Value": "v"}}}}``. Envelope and ``X-Amz-*`` parameters are left
    out; each service then shapes ``member.N``/``entry.N`` nodes into its own lists and maps. A
    name that is both a value and a prefix (``A=1&A.b=2``) keeps the value it met first."""
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        if name in ENVELOPE_PARAMS or name.startswith("X-Amz-"):
            continue
        node = tree
        parts = name.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[parts[-1]] = value
    return tree


def query_response(operation: str, result_xml: str, request_id: str) -> web.Response:
    """``<OpResponse><OpResult>...</OpResult><ResponseMetadata>`` as the query protocol answers."""
    body = (f'<?xml version="1.0"?><{operation}Response xmlns="http://queue.amazonaws.com/doc/'
            f'2012-11-05/"><{operation}Result>{result_xml}</{operation}Result><ResponseMetadata>'
            f'<RequestId>{request_id}</RequestId></ResponseMetadata></{operation}Response>')
    return web.Response(body=body.encode(), content_type="text/xml")


def error_response(exc: AwsError, protocol: str, request_id: str) -> web.Response:
    fault = "Sender" if exc.sender else "Receiver"
    if protocol == "json":
        body = json.dumps({"__type": exc.code, "message": exc.message}).encode()
        headers = {"x-amzn-RequestId": request_id,
                   # botocore reads the query-compatible code from here (awsQueryCompatible)
                   "x-amzn-query-error": f"{exc.query_code};{fault}"}
        return web.Response(status=exc.status, body=body, headers=headers,
                            content_type="application/x-amz-json-1.0")
    if protocol == "query":
        body = (f'<?xml version="1.0"?><ErrorResponse><Error><Type>{fault}</Type>'
                f"<Code>{escape(exc.query_code)}</Code><Message>{escape(exc.message)}</Message>"
                f"<Detail/></Error><RequestId>{request_id}</RequestId></ErrorResponse>")
        return web.Response(status=exc.status, body=body.encode(), content_type="text/xml")
    body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{escape(exc.code)}</Code>'
            f"<Message>{escape(exc.message)}</Message><RequestId>{request_id}</RequestId></Error>")
    return web.Response(status=exc.status, body=body.encode(), content_type="application/xml")
