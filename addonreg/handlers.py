"""Thin Tornado handlers: parse and validate, call the registry, write.

Every error answer is shaped in one place, :meth:`BaseHandler.write_error`:
the contract's body ``{code, errno, error, message, details?}`` (JSON, or
msgpack when the client asked for it), ``Retry-After`` on a 503, and no
traceback or driver text. Storage failures (:class:`BackendError`) become
``503``; anything unexpected becomes a ``500`` with a generic message and
the traceback in the server log only.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Tuple

import tornado.web
from tornado.web import HTTPError

from . import __version__, codec, metrics
from .auth import AuthError, HawkAuthenticator, NonceStoreError
from .batcher import QueueFull, ShuttingDown
from .errors import ERRNO, APIError, error_body
from .metrics import MetricsPump
from .ids import (InvalidIdentifier, check_addon_id, check_sha256, check_version, is_addon_id,
                  normalize_sha256, valid_keys)
from .registry import MISSING, Registry
from .storage import REVOKED, BackendError, Key, Operation, result_item

__all__ = ["BaseHandler"]

log = logging.getLogger("addonreg.handlers")

_TORNADO_ERRNO = {400: ERRNO.INVALID_REQUEST_BODY, 404: ERRNO.MISSING_RESOURCE,
                  405: ERRNO.METHOD_NOT_ALLOWED, 413: ERRNO.REQUEST_TOO_LARGE}


def bad_request(message: str, errno: ERRNO = ERRNO.INVALID_REQUEST_BODY, **details: Any) -> APIError:
    return APIError(400, errno, message, details or None)


class BaseHandler(tornado.web.RequestHandler):
    """Dependencies arrive through :meth:`initialize`; errors leave through :meth:`write_error`."""

    endpoint = "other"  # the label of this handler's requests in metrics

    def initialize(self, registry: Registry, settings,
                   auth: Optional[HawkAuthenticator] = None) -> None:
        self.registry = registry
        self.config = settings
        self.auth = auth

    def set_default_headers(self) -> None:
        self._headers["Content-Type"] = "application/json; charset=UTF-8"

    def compute_etag(self) -> Optional[str]:
        return None  # resources that have an ETag set it themselves

    _counted = False

    def count_in_flight(self) -> None:
        """Count this request as in flight until it is answered or dropped (for shutdown)."""
        if not self._counted:
            self._counted = True
            self.registry.request_started()

    def finish(self, chunk: Any = None) -> Any:
        if self.registry.stopping:
            # Shutting down: answer, then close the connection, so that
            # keep-alive clients (nginx) take their next request elsewhere.
            self.request.connection._disconnect_on_finish = True
        return super().finish(chunk)

    def on_finish(self) -> None:
        if self._counted:
            self._counted = False
            self.registry.request_finished()

    def on_connection_close(self) -> None:
        # The client left (perhaps before its body was complete): no answer
        # will be finished, so stop counting the request here.
        self.on_finish()
        super().on_connection_close()

    # Output ----------------------------------------------------------------

    def respond(self, body: Any, status: int = 200, negotiate: bool = False) -> None:
        data, content_type = codec.encode(
            body, negotiate and codec.wants_msgpack(self.request.headers.get("Accept")))
        self.set_status(status)
        self.set_header("Content-Type", content_type)
        if negotiate:
            self.set_header("Vary", "Accept")
        self.finish(data)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        details = None
        extra: Dict[str, Any] = {}
        if isinstance(exc, APIError):
            status_code, errno, message, details = exc.status, exc.errno, exc.message, exc.details
            for name, value in exc.headers.items():
                self.set_header(name, value)
            extra = exc.body
        elif isinstance(exc, BackendError):
            status_code, errno = 503, ERRNO.BACKEND
            message = "Storage is unavailable; retry later."
        elif isinstance(exc, ShuttingDown):
            status_code, errno = 503, ERRNO.SHUTTING_DOWN
            message = "This server is shutting down; retry. Nothing was written."
        elif isinstance(exc, QueueFull):
            status_code, errno = 503, ERRNO.QUEUE_FULL
            message = "Too many writes queued; retry later. Nothing was written."
        elif isinstance(exc, HTTPError):
            errno = _TORNADO_ERRNO.get(status_code, ERRNO.UNDEFINED)
            message = exc.reason or self._reason
            if status_code == 405:
                unimplemented = tornado.web.RequestHandler._unimplemented_method
                self.set_header("Allow", ", ".join(
                    m for m in self.SUPPORTED_METHODS
                    if getattr(type(self), m.lower(), unimplemented) is not unimplemented))
        else:
            status_code, errno = 500, ERRNO.UNDEFINED
            message = "Internal error; it has been logged."
        if status_code == 503:
            self.set_header("Retry-After", str(self.config.retry_after))
        if status_code >= 500 or "Cache-Control" not in self._headers:
            self.set_header("Cache-Control", "no-store")
        self.set_status(status_code)
        body = dict(extra)
        body.update(error_body(status_code, errno, message, details))
        data, content_type = codec.encode(body, codec.wants_msgpack(self.request.headers.get("Accept")))
        self.set_header("Content-Type", content_type)
        self.finish(data)

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, APIError):
            if value.log_message:
                log.info("%s %s: %s", self.request.method, self.request.uri, value.log_message)
        elif isinstance(value, BackendError):
            log.warning("%s %s: storage failed: %s", self.request.method,
                        self.request.uri, value)
        elif isinstance(value, QueueFull):
            log.warning("%s %s: refused: %s", self.request.method, self.request.uri, value)
        else:
            super().log_exception(typ, value, tb)

    # Input -----------------------------------------------------------------

    @property
    def raw_body(self) -> bytes:
        return self.request.body

    def body_object(self, msgpack_allowed: bool = False, exact: bool = False) -> Dict[str, Any]:
        """The decoded body, which must be an object (a map).

        JSON; MessagePack too where the contract says so (``msgpack_allowed``);
        ``exact`` for answers that echo what was sent.
        """
        try:
            value = codec.decode(self.raw_body, self.request.headers.get("Content-Type"),
                                 msgpack_allowed, exact)
        except codec.DecodeError as exc:
            raise bad_request(str(exc)) from None
        if not isinstance(value, dict):
            raise bad_request("body must be an object")
        return value

    async def authenticate(self) -> str:
        """Hawk: the credential id, or a 401 (503 when the nonce store is down)."""
        try:
            return await self.auth.authenticate(
                method=self.request.method, url=self.request.full_url(),
                authorization=self.request.headers.get("Authorization"),
                content=self.raw_body, content_type=self.request.headers.get("Content-Type"))
        except AuthError as exc:
            raise APIError(401, ERRNO(exc.errno), exc.message,
                           headers={"WWW-Authenticate": self.auth.www_authenticate(exc)},
                           log_message=exc.log_message) from None
        except NonceStoreError as exc:
            raise APIError(503, ERRNO.BACKEND, "Authentication is unavailable; retry later.",
                           log_message=f"nonce store: {exc}") from None

    def path_key(self, addon_id: str, sha256: str) -> Key:
        try:
            return check_addon_id(addon_id), check_sha256(sha256)
        except InvalidIdentifier as exc:
            raise bad_request(str(exc), ERRNO.INVALID_PARAMETERS, field=exc.field) from None

    def int_argument(self, name: str, default: int, lowest: int, highest: int) -> int:
        raw = self.get_query_argument(name, None, strip=False)
        if raw is None:
            return default
        try:
            if not (raw.isascii() and raw.isdigit()):  # no sign, no "_", no other scripts
                raise ValueError
            value = int(raw)
            if not lowest <= value <= highest:
                raise ValueError
        except ValueError:
            raise bad_request(f"{name} must be an integer from {lowest} to {highest}",
                              ERRNO.INVALID_PARAMETERS, field=name) from None
        return value


@tornado.web.stream_request_body
class BodyHandler(BaseHandler):
    """A handler that takes a body: size-checked while it arrives, then decoded.

    An oversized body is refused with 413 as soon as its Content-Length is
    seen (or, when chunked, as soon as it passes the limit), without reading
    the rest.
    """

    def prepare(self) -> None:
        if self.request.method != "GET":
            self.count_in_flight()
        self._chunks: List[bytes] = []
        self._size = 0
        length = self.request.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > self.config.max_body_size:
            raise self._too_large()

    def _too_large(self) -> APIError:
        return APIError(413, ERRNO.REQUEST_TOO_LARGE,
                        f"request body is larger than {self.config.max_body_size} bytes",
                        {"max_body_size": self.config.max_body_size})

    def data_received(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self.config.max_body_size:
            raise self._too_large()
        self._chunks.append(chunk)

    @property
    def raw_body(self) -> bytes:
        if len(self._chunks) != 1:
            self._chunks = [b"".join(self._chunks)]
        return self._chunks[0]


def cache_control(max_age: int) -> str:
    return f"public, max-age={max(max_age, 0)}"


class FileHandler(BaseHandler):
    """``/v1/addons/{addon_id}/files/{sha256}``: ``GET``/``HEAD`` (200, 410 or 404),
    and the Hawk-authenticated ``PUT`` (register) and ``DELETE`` (revoke).

    Not a streaming handler, to keep the hot GET as cheap as it can be: a PUT
    body is small, and Tornado's own limit bounds it.
    """

    endpoint = "file"

    async def get(self, addon_id: str, sha256: str) -> None:
        key = self.path_key(addon_id, sha256)
        record = self.registry.cached_file(key)
        if record is MISSING:
            record = await self.registry.file(key)
        if record is None:
            raise APIError(404, ERRNO.MISSING_RESOURCE, "this file is not registered",
                           {"addon_id": key[0], "sha256": key[1]},
                           headers={"Cache-Control": cache_control(self.config.http_negative_max_age)})
        self.set_header("Cache-Control", cache_control(self.config.http_max_age))
        self.set_header("Etag", f'"{record.serial}"')
        if record.status == REVOKED:
            raise APIError(410, ERRNO.RESOURCE_GONE, "this file's registration was revoked",
                           headers={"Cache-Control": cache_control(self.config.http_max_age),
                                    "Etag": f'"{record.serial}"'},
                           body=record.to_dict())
        if self.check_etag_header():
            self.set_status(304)
            self.finish()
            return
        self.finish(codec.file_body(record))

    head = get

    def prepare(self) -> None:
        if self.request.method in ("PUT", "DELETE"):
            self.count_in_flight()

    async def put(self, addon_id: str, sha256: str) -> None:
        if len(self.raw_body) > self.config.max_body_size:
            raise APIError(413, ERRNO.REQUEST_TOO_LARGE,
                           f"request body is larger than {self.config.max_body_size} bytes")
        await self.authenticate()
        key = self.path_key(addon_id, sha256)
        version = None
        if self.raw_body.strip():
            try:
                version = check_version(self.body_object().get("version"))
            except InvalidIdentifier as exc:
                raise bad_request(str(exc), ERRNO.INVALID_PARAMETERS, field=exc.field) from None
        [applied] = await self.registry.write([Operation("register", *key, version)])
        self.respond(applied.record.to_dict(), 201 if applied.created else 200)

    async def delete(self, addon_id: str, sha256: str) -> None:
        await self.authenticate()
        key = self.path_key(addon_id, sha256)
        [applied] = await self.registry.write([Operation("revoke", *key)])
        if applied.record is None:
            raise APIError(404, ERRNO.MISSING_RESOURCE, "this file is not registered",
                           {"addon_id": key[0], "sha256": key[1]})
        self.respond(applied.record.to_dict())


class AddonFilesHandler(BaseHandler):
    """``GET /v1/addons/{addon_id}/files``: every file of an add-on."""

    endpoint = "addon_files"

    async def get(self, addon_id: str) -> None:
        try:
            check_addon_id(addon_id)
        except InvalidIdentifier as exc:
            raise bad_request(str(exc), ERRNO.INVALID_PARAMETERS, field=exc.field) from None
        records = await self.registry.addon_files(addon_id)
        if not records:
            raise APIError(404, ERRNO.MISSING_RESOURCE, "this add-on has no registered files",
                           {"addon_id": addon_id},
                           headers={"Cache-Control": cache_control(self.config.http_negative_max_age)})
        self.set_header("Cache-Control", cache_control(self.config.http_max_age))
        self.set_header("Etag", f'"{max(r.serial for r in records)}-{len(records)}"')
        if self.check_etag_header():
            self.set_status(304)
            self.finish()
            return
        self.finish(codec.addon_files_body(addon_id, records))

    head = get


def lookup_keys(items: Any, max_items: int, id_field: str = "addon_id") -> List[Key]:
    """Validate a bulk lookup's list of ``{addon_id, sha256}`` items."""
    if not isinstance(items, list):
        raise bad_request("'files' must be a list", ERRNO.INVALID_REQUEST_BODY, field="files")
    if not items:
        raise bad_request("'files' must hold at least one item", ERRNO.MISSING_PARAMETERS,
                          field="files")
    if len(items) > max_items:
        raise APIError(413, ERRNO.TOO_MANY_ITEMS,
                       f"at most {max_items} files per lookup", {"max_lookup": max_items})
    try:
        keys = valid_keys([item[id_field] for item in items], [item["sha256"] for item in items])
    except (TypeError, KeyError, IndexError):  # an item that is not an object, or lacks one
        keys = None
    if keys is not None:
        return keys
    # Something is wrong: find the first bad item, and say what.
    keys = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or id_field not in item or "sha256" not in item:
            raise bad_request(f"item {i} must be an object with {id_field} and sha256",
                              ERRNO.INVALID_REQUEST_BODY, index=i)
        try:
            keys.append((check_addon_id(item[id_field]), check_sha256(item["sha256"])))
        except InvalidIdentifier as exc:
            raise bad_request(f"item {i}: {exc}", ERRNO.INVALID_PARAMETERS,
                              index=i, field=exc.field) from None
    return keys


class LookupHandler(BodyHandler):
    """``POST /v1/lookup``: many files at once, answers in request order."""

    endpoint = "lookup"

    async def post(self) -> None:
        keys = lookup_keys(self.body_object(msgpack_allowed=True).get("files"),
                           self.config.max_lookup)
        records = await self.registry.lookup(keys)
        self.respond({"results": [
            {"addon_id": a, "sha256": s, "status": r.status, "version": r.version}
            if r is not None else
            {"addon_id": a, "sha256": s, "status": "unknown", "version": None}
            for (a, s), r in zip(keys, records)]}, negotiate=True)


class ChangesHandler(BaseHandler):
    """``GET /v1/changes?since=S&limit=N``: the change feed."""

    endpoint = "changes"

    async def get(self) -> None:
        since = self.int_argument("since", 0, 0, 2 ** 63 - 1)
        limit = self.int_argument("limit", 1000, 1, 10000)
        records = await self.registry.changes(since, limit)
        self.set_header("Cache-Control", "no-cache")
        self.finish(codec.encode_json({
            "changes": [r.to_dict() for r in records],
            "next_since": records[-1].serial if records else since}))


class ServiceHandler(BaseHandler):
    """``GET /v1/``: what this service is and its public settings."""

    endpoint = "service"

    def get(self) -> None:
        self.finish(codec.encode_json({
            "project_name": "addonreg", "project_version": __version__,
            "http_api_version": "1", "url": f"{self.request.protocol}://{self.request.host}/v1/",
            "settings": self.config.public()}))


# The original API --------------------------------------------------------------

def _old_item(item: Any) -> Tuple[Any, Any]:
    if not isinstance(item, dict) or "id" not in item or "sha256" not in item:
        raise bad_request("each add-on must be an object with id and sha256",
                          ERRNO.MISSING_PARAMETERS)
    return item["id"], item["sha256"]


def _valid_key(addon_id: Any, sha256: Any) -> Optional[Key]:
    if not is_addon_id(addon_id):
        return None
    sha = normalize_sha256(sha256)
    return None if sha is None else (addon_id, sha)


class OldAddonHandler(BodyHandler):
    """``POST /addon`` ``{id, sha256}`` -> ``{id, sha256, registered}`` (2013 API)."""

    endpoint = "old_addon"

    async def post(self) -> None:
        addon_id, sha256 = _old_item(self.body_object(exact=True))
        key = _valid_key(addon_id, sha256)
        record = None if key is None else await self.registry.file(key)
        self.respond({"id": addon_id, "sha256": sha256,
                      "registered": record is not None and record.status != REVOKED})


class OldAddonsHandler(BodyHandler):
    """``POST /addons`` ``{addons: [{id, sha256}, ...]}`` (2013 API)."""

    endpoint = "old_addons"

    async def post(self) -> None:
        items = self.body_object(exact=True).get("addons")
        if not isinstance(items, list):
            raise bad_request("'addons' must be a list", ERRNO.INVALID_REQUEST_BODY)
        if len(items) > self.config.max_lookup:
            raise APIError(413, ERRNO.TOO_MANY_ITEMS,
                           f"at most {self.config.max_lookup} add-ons per request",
                           {"max_lookup": self.config.max_lookup})
        pairs = [_old_item(item) for item in items]
        keys = [_valid_key(a, s) for a, s in pairs]
        valid = [k for k in keys if k is not None]
        registered = {k for k, r in zip(valid, await self.registry.lookup(valid))
                      if r is not None and r.status != REVOKED}
        self.respond({"addons": [{"id": a, "sha256": s, "registered": k in registered}
                                 for (a, s), k in zip(pairs, keys)]})


# Operations --------------------------------------------------------------------

class LBHeartbeatHandler(BaseHandler):
    endpoint = "lbheartbeat"

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.finish(b"{}")

    head = get


class HeartbeatHandler(BaseHandler):
    endpoint = "heartbeat"

    async def get(self) -> None:
        checks = await self.registry.heartbeat()
        body = {name: "ok" if ok else "error" for name, ok in checks.items()}
        self.set_header("Cache-Control", "no-store")
        if all(checks.values()):
            self.finish(codec.encode_json(body))
            return
        failed = sorted(n for n, ok in checks.items() if not ok)
        raise APIError(503, ERRNO.BACKEND, "failing checks: " + ", ".join(failed),
                       {"checks": body}, body=body)


class VersionHandler(BaseHandler):
    endpoint = "version"

    def initialize(self, registry: Registry, settings, auth: Optional[HawkAuthenticator] = None,
                   version: Optional[Dict[str, str]] = None) -> None:
        super().initialize(registry, settings, auth)
        self.version = version

    def get(self) -> None:
        self.finish(codec.encode_json(self.version))


# Writes ------------------------------------------------------------------------

def _operation(i: int, item: Any) -> Operation:
    if not isinstance(item, dict) or item.get("op") not in ("register", "revoke") \
            or "addon_id" not in item or "sha256" not in item:
        raise bad_request(f"operation {i} must be an object with op (register or revoke), "
                          "addon_id and sha256", ERRNO.INVALID_REQUEST_BODY, index=i)
    try:
        version = check_version(item.get("version"))
        if version is not None and item["op"] == "revoke":
            raise InvalidIdentifier("version", "a revoke takes no version")
        return Operation(item["op"], check_addon_id(item["addon_id"]),
                         check_sha256(item["sha256"]), version)
    except InvalidIdentifier as exc:
        raise bad_request(f"operation {i}: {exc}", ERRNO.INVALID_PARAMETERS,
                          index=i, field=exc.field) from None


class RegistrationsHandler(BodyHandler):
    """``POST /v1/registrations``: many operations, all valid or none written."""

    endpoint = "registrations"

    async def post(self) -> None:
        owner = await self.authenticate()
        items = self.body_object(msgpack_allowed=True).get("operations")
        if not isinstance(items, list):
            raise bad_request("'operations' must be a list", field="operations")
        if not items:
            raise bad_request("'operations' must hold at least one item",
                              ERRNO.MISSING_PARAMETERS, field="operations")
        if len(items) > self.config.max_write:
            raise APIError(413, ERRNO.TOO_MANY_ITEMS,
                           f"at most {self.config.max_write} operations per request",
                           {"max_write": self.config.max_write})
        ops = [_operation(i, item) for i, item in enumerate(items)]
        if "respond-async" in self.request.headers.get("Prefer", "").lower():
            job_id = await self.registry.write_async(owner, ops)
            self.set_header("Location", f"/v1/jobs/{job_id}")
            self.set_header("Preference-Applied", "respond-async")
            self.respond({"job": job_id, "status": "queued"}, 202, negotiate=True)
            return
        results = await self.registry.write(ops)
        self.respond({"results": [result_item(op, a) for op, a in zip(ops, results)]},
                     negotiate=True)


class JobHandler(BodyHandler):
    """``GET /v1/jobs/{id}``: an asynchronous write's state (its owner only)."""

    endpoint = "jobs"

    async def get(self, job_id: str) -> None:
        owner = await self.authenticate()
        job = await self.registry.job(job_id) if len(job_id) <= 64 else None
        if job is None or job.owner != owner:
            raise APIError(404, ERRNO.MISSING_RESOURCE, "no such job")
        body: Dict[str, Any] = {"job": job.id, "status": job.status}
        if job.results is not None:
            body["results"] = job.results
        self.set_header("Cache-Control", "no-store")
        self.respond(body, negotiate=True)


class OldHashHandler(BodyHandler):
    """``POST /hash`` ``{id, sha256}`` (2013 API, Hawk): ``202`` once committed."""

    endpoint = "old_hash"

    async def post(self) -> None:
        await self.authenticate()
        addon_id, sha256 = _old_item(self.body_object())
        try:
            key = check_addon_id(addon_id), check_sha256(sha256)
        except InvalidIdentifier as exc:
            raise bad_request(str(exc), ERRNO.INVALID_PARAMETERS, field=exc.field) from None
        await self.registry.write([Operation("register", *key)])
        self.respond({"id": addon_id, "sha256": sha256, "registered": True}, 202)


class MetricsHandler(BaseHandler):
    """``GET /__metrics__``: Prometheus text format, every process of the host."""

    endpoint = "metrics"

    def initialize(self, registry: Registry, settings, auth: Optional[HawkAuthenticator] = None,
                   pump: Optional[MetricsPump] = None) -> None:
        super().initialize(registry, settings, auth)
        self.pump = pump

    def get(self) -> None:
        if self.pump is not None:
            self.pump.pump()  # this process's latest, not a second old
        self.set_header("Content-Type", metrics.CONTENT_TYPE)
        self.set_header("Cache-Control", "no-store")
        self.finish(metrics.exposition())


class NotFoundHandler(BaseHandler):
    endpoint = "not_found"

    def prepare(self) -> None:
        raise APIError(404, ERRNO.MISSING_RESOURCE, "no such resource")
