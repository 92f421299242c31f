"""AWS Signature Version 4 verification, plugged into ``AwsApi.authenticate``.

Every request must be signed with an access key from ``[[access_keys]] user, id, secret`` (the
server keeps the secret, as AWS does); key id ``guest`` with secret ``guest`` is valid from
loopback while the guest user exists. Both forms are checked: the ``Authorization`` header and a
presigned URL (``X-Amz-Signature`` in the query). The algorithm is AWS's "Create a signed AWS API
request" (https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html):
canonical request -> string to sign -> HMAC chain over date, region, service.

On success the request carries the key's user and a :class:`~manifold.broker.access.Grant` on the
vhost the AWS APIs use; handlers check an operation with :func:`require` (``AccessDenied``).
Errors are the ones AWS gives, rendered by the dispatcher in the request's own format.
"""
from __future__ import annotations

import datetime
import hashlib
import hmac
import re
from typing import Any
from urllib.parse import quote, unquote

from manifold.broker.access import is_loopback
from manifold.broker.errors import AccessRefused

from .http import AwsError, AwsRequest

ALGORITHM = "AWS4-HMAC-SHA256"
#: how far a request's X-Amz-Date may be from the server clock (AWS: 15 minutes)
MAX_SKEW = datetime.timedelta(minutes=15)
_AUTH = re.compile(r"AWS4-HMAC-SHA256\s+Credential=([^,\s]+)\s*,\s*SignedHeaders=([^,\s]+)\s*,"
                   r"\s*Signature=([0-9a-fA-F]+)")
_SPACES = re.compile(r"\s+")
#: unsigned requests AWS accepts: the SubscribeURL (ConfirmSubscription with its token) and the
#: UnsubscribeURL an SNS endpoint receives, and Manifold's SigningCertURL
ANONYMOUS = {("sns", "ConfirmSubscription"), ("sns", "Unsubscribe"),
             ("sns", "GetSigningCertificate")}
GUEST = "guest"


def _error(request: AwsRequest, kind: str, message: str) -> AwsError:
    """The error AWS gives for ``kind`` in this request's protocol: JSON services answer with
    their own exception names (SQS JSON adds the query code botocore maps back)."""
    json_codes = {"unknown_key": "UnrecognizedClientException",
                  "bad_signature": "InvalidSignatureException",
                  "missing": "MissingAuthenticationTokenException",
                  "expired": "InvalidSignatureException"}
    query_codes = {"unknown_key": "InvalidClientTokenId", "bad_signature": "SignatureDoesNotMatch",
                   "missing": "MissingAuthenticationToken", "expired": "RequestExpired"}
    s3_codes = {"unknown_key": "InvalidAccessKeyId", "bad_signature": "SignatureDoesNotMatch",
                "missing": "AccessDenied", "expired": "RequestTimeTooSkewed"}
    if request.protocol == "json":
        status = 400 if kind == "missing" else 403
        return AwsError(json_codes[kind], message, status, query_code=query_codes[kind])
    if request.protocol == "rest":
        return AwsError(s3_codes[kind], message, 403)
    return AwsError(query_codes[kind], message, 403)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = _hmac(("AWS4" + secret).encode(), date)
    return _hmac(_hmac(_hmac(key, region), service), "aws4_request")


def _canonical_query(raw_query: str, drop_signature: bool) -> str:
    pairs = []
    for part in raw_query.split("&") if raw_query else ():
        if not part:
            continue
        key, _, value = part.partition("=")
        key, value = unquote(key.replace("+", "%20")), unquote(value.replace("+", "%20"))
        if drop_signature and key == "X-Amz-Signature":
            continue
        pairs.append((quote(key, safe="-_.~"), quote(value, safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def _canonical_path(raw_path: str, service: str) -> str:
    if service == "s3":
        return raw_path or "/"  # S3 signs the path as sent, neither normalised nor re-encoded
    segments = []
    for segment in raw_path.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in (".",):
            segments.append(segment)
    path = "/".join(segments) or "/"
    if not path.startswith("/"):
        path = "/" + path
    if raw_path.endswith("/") and not path.endswith("/"):
        path += "/"
    return quote(path, safe="/~")


def canonical_request(method: str, raw_path: str, raw_query: str, headers: Any,
                      signed_headers: list[str], payload_hash: str, service: str,
                      presigned: bool = False) -> str:
    lines = []
    for name in signed_headers:
        values = headers.getall(name, []) if hasattr(headers, "getall") else [headers.get(name)]
        value = ",".join(_SPACES.sub(" ", str(v).strip()) for v in values if v is not None)
        lines.append(f"{name}:{value}\n")
    return "\n".join([method, _canonical_path(raw_path, service),
                      _canonical_query(raw_query, presigned), "".join(lines),
                      ";".join(signed_headers), payload_hash])


class SigV4Verifier:
    """``AwsApi.authenticate``: verifies the signature, then attaches the user and its grant."""

    def __init__(self, broker: Any, vhost: str = "/"):
        self.broker = broker
        self.vhost = vhost

    async def __call__(self, request: AwsRequest) -> None:
        http = request.http
        raw_path, _, raw_query = http.raw_path.partition("?")
        match = _AUTH.match(http.headers.get("Authorization", ""))
        presigned = match is None and "X-Amz-Signature" in http.query
        if match is not None:
            credential, signed, signature = match.groups()
            amz_date = http.headers.get("X-Amz-Date") or http.headers.get("Date", "")
        elif presigned:
            if http.query.get("X-Amz-Algorithm") != ALGORITHM:
                raise _error(request, "missing", f"only {ALGORITHM} is supported")
            credential = http.query.get("X-Amz-Credential", "")
            signed = http.query.get("X-Amz-SignedHeaders", "host")
            signature = http.query.get("X-Amz-Signature", "")
            amz_date = http.query.get("X-Amz-Date", "")
        elif (request.service, request.operation) in ANONYMOUS:
            return  # the SNS links a subscriber follows; the token is the credential
        else:
            raise _error(request, "missing", "Request is missing Authentication Token")
        try:
            key_id, date, region, service, terminal = credential.split("/")
        except ValueError:
            raise _error(request, "bad_signature", "malformed Credential") from None
        user, secret = self._key(request, key_id)
        when = self._check_date(request, amz_date, date)
        if presigned:
            expires = int(http.query.get("X-Amz-Expires", "0") or 0)
            if when + datetime.timedelta(seconds=expires) < _now():
                raise _error(request, "expired", "Request has expired")
        payload_hash = http.headers.get("X-Amz-Content-SHA256")
        if presigned and payload_hash is None and service == "s3":
            payload_hash = "UNSIGNED-PAYLOAD"  # S3 presigned URLs do not sign the body
        if payload_hash is None:
            payload_hash = hashlib.sha256(await http.read()).hexdigest()
        canonical = canonical_request(http.method, raw_path, raw_query, http.headers,
                                      signed.split(";"), payload_hash, service, presigned)
        string_to_sign = "\n".join([ALGORITHM, amz_date, f"{date}/{region}/{service}/{terminal}",
                                    hashlib.sha256(canonical.encode()).hexdigest()])
        expected = hmac.new(signing_key(secret, date, region, service), string_to_sign.encode(),
                            hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise _error(request, "bad_signature",
                         "The request signature we calculated does not match the signature you "
                         "provided. Check your AWS Secret Access Key and signing method.")
        request.user = user
        request.grant = self.broker.grant(user, self.vhost)

    def _key(self, request: AwsRequest, key_id: str) -> tuple[Any, str]:
        access = self.broker.access
        entry = access.access_keys.get(key_id)
        if entry is not None:
            user = access.user(entry[0])
            if user is not None:
                return user, entry[1]
        elif key_id == GUEST:
            # guest/guest from loopback while the guest user exists, as for the other protocols
            user = access.user(GUEST)
            if user is not None and (not user.loopback_only or is_loopback(request.peer)):
                return user, GUEST
        raise _error(request, "unknown_key",
                     "The security token included in the request is invalid.")

    @staticmethod
    def _check_date(request: AwsRequest, amz_date: str, scope_date: str) -> datetime.datetime:
        try:
            when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
                tzinfo=datetime.timezone.utc)
        except ValueError:
            raise _error(request, "bad_signature", "X-Amz-Date is missing or malformed") from None
        if not amz_date.startswith(scope_date):
            raise _error(request, "bad_signature", "credential scope date differs from X-Amz-Date")
        if abs(_now() - when) > MAX_SKEW:
            raise _error(request, "expired", f"Signature expired: {amz_date} is more than 15 "
                         "minutes from the server time")
        return when


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def require(request: AwsRequest, action: str, kind: str, name: str) -> None:
    """Raise ``AccessDenied`` unless the request's user may ``action`` (configure, write, read)
    the ``kind`` (queue, exchange) ``name``. SQS: SendMessage -> write, ReceiveMessage -> read,
    CreateQueue -> configure on the queue."""
    grant = getattr(request, "grant", None)
    if grant is None:
        return  # no verifier installed (an embedded test app): nothing to check against
    try:
        grant.check(action, kind, name)
    except AccessRefused as exc:
        raise AwsError("AccessDenied", exc.text, 403, query_code="AccessDenied") from None
