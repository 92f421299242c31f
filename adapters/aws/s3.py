"""A minimal Amazon S3 (REST, path-style) backed by files under ``DATA_DIR/s3``: ListBuckets,
CreateBucket, HeadBucket, DeleteBucket, ListObjects(V2), PutObject, GetObject, HeadObject,
DeleteObject. Enough for ``boto3.client("s3")`` and ``aws s3 ls/cp`` to read what Firehose
delivered, and to put and fetch small objects.

Layout: ``s3/BUCKET/`` is a bucket; each object is one file named by its key percent-encoded
(keys hold ``/``), plus ``NAME.meta`` (JSON: content type, ETag). Writes go to a temporary file,
are fsynced and renamed into place, and the directory is fsynced, before PutObject answers.
"""
from __future__ import annotations

import asyncio
import datetime
import email.utils
import hashlib
import json
import os
import re
from typing import Any
from urllib.parse import quote, unquote
from xml.sax.saxutils import escape

from aiohttp import web

from .http import AwsApi, AwsError, AwsRequest

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_XMLNS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def _no_bucket(name: str) -> AwsError:
    return AwsError("NoSuchBucket", f"The specified bucket does not exist: {name}", 404)


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.000Z")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ObjectStore:
    """The files behind the S3 API; blocking methods, called in a worker thread."""

    def __init__(self, root: str):
        self.root = root

    def _bucket_dir(self, bucket: str) -> str:
        return os.path.join(self.root, bucket)

    def _path(self, bucket: str, key: str) -> str:
        return os.path.join(self._bucket_dir(bucket), quote(key, safe=""))

    def bucket_exists(self, bucket: str) -> bool:
        return bool(_BUCKET.match(bucket)) and os.path.isdir(self._bucket_dir(bucket))

    def buckets(self) -> list[tuple[str, float]]:
        if not os.path.isdir(self.root):
            return []
        return sorted((name, os.stat(self._bucket_dir(name)).st_mtime)
                      for name in os.listdir(self.root) if self.bucket_exists(name))

    def create_bucket(self, bucket: str) -> None:
        os.makedirs(self.root, exist_ok=True)
        if not os.path.isdir(self._bucket_dir(bucket)):
            os.mkdir(self._bucket_dir(bucket))
            _fsync_dir(self.root)

    def delete_bucket(self, bucket: str) -> None:
        if os.listdir(self._bucket_dir(bucket)):
            raise AwsError("BucketNotEmpty", "The bucket you tried to delete is not empty", 409)
        os.rmdir(self._bucket_dir(bucket))
        _fsync_dir(self.root)

    def put(self, bucket: str, key: str, data: bytes, content_type: str) -> str:
        if not self.bucket_exists(bucket):
            raise _no_bucket(bucket)
        path = self._path(bucket, key)
        etag = '"' + hashlib.md5(data).hexdigest() + '"'
        meta = json.dumps({"ContentType": content_type, "ETag": etag}).encode()
        for target, content in ((path, data), (path + ".meta", meta)):
            temporary = target + ".tmp"
            with open(temporary, "wb") as fh:
                fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temporary, target)
        _fsync_dir(self._bucket_dir(bucket))
        return etag

    def head(self, bucket: str, key: str) -> dict:
        if not self.bucket_exists(bucket):
            raise _no_bucket(bucket)
        path = self._path(bucket, key)
        try:
            stat = os.stat(path)
            with open(path + ".meta", "rb") as fh:
                meta = json.loads(fh.read())
        except (OSError, ValueError):
            raise AwsError("NoSuchKey", "The specified key does not exist.", 404) from None
        return {**meta, "Size": stat.st_size, "LastModified": stat.st_mtime}

    def get(self, bucket: str, key: str) -> tuple[dict, bytes]:
        meta = self.head(bucket, key)
        with open(self._path(bucket, key), "rb") as fh:
            return meta, fh.read()

    def delete(self, bucket: str, key: str) -> None:
        if not self.bucket_exists(bucket):
            raise _no_bucket(bucket)
        for path in (self._path(bucket, key) + ".meta", self._path(bucket, key)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        _fsync_dir(self._bucket_dir(bucket))

    def keys(self, bucket: str) -> list[tuple[str, dict]]:
        if not self.bucket_exists(bucket):
            raise _no_bucket(bucket)
        out = []
        for name in os.listdir(self._bucket_dir(bucket)):
            if name.endswith((".meta", ".tmp")):
                continue
            key = unquote(name)
            try:
                out.append((key, self.head(bucket, key)))
            except AwsError:
                continue  # a half-written object (no metadata yet) is not listed
        return sorted(out)


def _decode_aws_chunked(body: bytes) -> bytes:
    """``Content-Encoding: aws-chunked`` (SigV4 streaming, checksum trailers): the payload."""
    out, pos = bytearray(), 0
    while pos < len(body):
        end = body.index(b"\r\n", pos)
        size = int(body[pos:end].split(b";", 1)[0], 16)
        pos = end + 2
        if size == 0:
            break
        out += body[pos:pos + size]
        pos += size + 2
    return bytes(out)


def _list(store: ObjectStore, bucket: str, q: Any, v2: bool) -> str:
    prefix = q.get("prefix", "")
    delimiter = q.get("delimiter", "")
    try:
        max_keys = int(q.get("max-keys", "1000"))
    except ValueError:
        raise AwsError("InvalidArgument", "max-keys must be an integer") from None
    url = q.get("encoding-type") == "url"
    start = q.get("continuation-token") or q.get("start-after") or q.get("marker") or ""
    contents, prefixes, truncated, last = [], [], False, ""
    for key, meta in store.keys(bucket):
        if not key.startswith(prefix) or key <= start:
            continue
        if delimiter:
            cut = key.find(delimiter, len(prefix))
            if cut >= 0:
                common = key[:cut + len(delimiter)]
                if common not in prefixes and common > start:
                    if len(contents) + len(prefixes) >= max_keys:
                        truncated = True
                        break
                    prefixes.append(common)
                    last = common
                continue
        if len(contents) + len(prefixes) >= max_keys:
            truncated = True
            break
        contents.append((key, meta))
        last = key

    def enc(text: str) -> str:
        return escape(quote(text, safe="/") if url else text)

    parts = [f"<Name>{escape(bucket)}</Name><Prefix>{enc(prefix)}</Prefix>"
             f"<MaxKeys>{max_keys}</MaxKeys><IsTruncated>{str(truncated).lower()}</IsTruncated>"]
    if delimiter:
        parts.append(f"<Delimiter>{enc(delimiter)}</Delimiter>")
    if url:
        parts.append("<EncodingType>url</EncodingType>")
    if v2:
        parts.append(f"<KeyCount>{len(contents) + len(prefixes)}</KeyCount>")
        if truncated:
            parts.append(f"<NextContinuationToken>{escape(last)}</NextContinuationToken>")
    elif truncated:
        parts.append(f"<NextMarker>{enc(last)}</NextMarker>")
    for key, meta in contents:
        parts.append(f"<Contents><Key>{enc(key)}</Key>"
                     f"<LastModified>{_iso(meta['LastModified'])}</LastModified>"
                     f"<ETag>{escape(meta['ETag'])}</ETag><Size>{meta['Size']}</Size>"
                     "<StorageClass>STANDARD</StorageClass></Contents>")
    for common in prefixes:
        parts.append(f"<CommonPrefixes><Prefix>{enc(common)}</Prefix></CommonPrefixes>")
    return f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult {_XMLNS}>' \
        f'{"".join(parts)}</ListBucketResult>'


def _xml(body: str, status: int = 200) -> web.Response:
    return web.Response(status=status, body=body.encode(), content_type="application/xml")


def _object_headers(meta: dict) -> dict:
    return {"ETag": meta["ETag"], "Content-Type": meta.get("ContentType") or
            "binary/octet-stream",
            "Last-Modified": email.utils.formatdate(meta["LastModified"], usegmt=True),
            "Accept-Ranges": "bytes"}


def install(api: AwsApi) -> ObjectStore:
    store = ObjectStore(os.path.join(api.settings.server.data_dir, "s3"))

    async def handle(request: AwsRequest) -> web.StreamResponse:
        http = request.http
        bucket, _, key = http.rel_url.raw_path.lstrip("/").partition("/")
        bucket = unquote(bucket)
        key = unquote(key)
        method = http.method
        if not bucket:
            if method != "GET":
                raise AwsError("MethodNotAllowed", "method not allowed on the service", 405)
            buckets = await asyncio.to_thread(store.buckets)
            items = "".join(f"<Bucket><Name>{escape(n)}</Name><CreationDate>{_iso(t)}"
                            "</CreationDate></Bucket>" for n, t in buckets)
            return _xml(f'<?xml version="1.0" encoding="UTF-8"?><ListAllMyBucketsResult '
                        f'{_XMLNS}><Owner><ID>000000000000</ID><DisplayName>manifold'
                        f'</DisplayName></Owner><Buckets>{items}</Buckets>'
                        '</ListAllMyBucketsResult>')
        if not key:
            if method == "PUT":
                if not _BUCKET.match(bucket):
                    raise AwsError("InvalidBucketName", "The specified bucket is not valid.")
                await asyncio.to_thread(store.create_bucket, bucket)
                return web.Response(headers={"Location": f"/{bucket}"})
            if not await asyncio.to_thread(store.bucket_exists, bucket):
                if method == "HEAD":
                    return web.Response(status=404)
                raise _no_bucket(bucket)
            if method == "HEAD":
                return web.Response()
            if method == "DELETE":
                await asyncio.to_thread(store.delete_bucket, bucket)
                return web.Response(status=204)
            if method == "GET":
                if "location" in http.query:
                    return _xml('<?xml version="1.0" encoding="UTF-8"?>'
                                f'<LocationConstraint {_XMLNS}/>')
                body = await asyncio.to_thread(_list, store, bucket, http.query,
                                               http.query.get("list-type") == "2")
                return _xml(body)
            raise AwsError("NotImplemented", f"{method} on a bucket is not implemented", 501)
        if method == "PUT":
            data = await http.read()
            if "aws-chunked" in http.headers.get("Content-Encoding", "") or \
                    http.headers.get("x-amz-content-sha256", "").startswith("STREAMING-"):
                data = _decode_aws_chunked(data)
            etag = await asyncio.to_thread(store.put, bucket, key, data,
                                           http.headers.get("Content-Type", ""))
            return web.Response(headers={"ETag": etag})
        if method in ("GET", "HEAD"):
            try:
                if method == "HEAD":
                    meta, data = await asyncio.to_thread(store.head, bucket, key), b""
                else:
                    meta, data = await asyncio.to_thread(store.get, bucket, key)
            except AwsError as exc:
                if method == "HEAD":
                    return web.Response(status=exc.status)
                raise
            headers = _object_headers(meta)
            if method == "HEAD":
                headers["Content-Length"] = str(meta["Size"])
                return web.Response(headers=headers)
            return web.Response(body=data, headers=headers)
        if method == "DELETE":
            await asyncio.to_thread(store.delete, bucket, key)
            return web.Response(status=204)
        raise AwsError("NotImplemented", f"{method} on an object is not implemented", 501)

    api.register_rest(handle)
    return store
