"""The handlers: parse (``inputs``), call the registry, write.

Errors are raised, never written here: ``web.BaseHandler.write_error`` shapes
every one (``docs/errors.md``).
"""

from __future__ import annotations

import os
from typing import Any, Awaitable, Dict, Optional

from . import __version__, apidoc, inputs, media, metrics
from .errors import ERRNO, APIError
from .ids import check_addon_id, check_sha256
from .registry import MISSING, Answer
from .storage import REVOKED, Key, Operation, Record, result_item
from .web import BaseHandler, BodyHandler, cache_control

__all__ = [
    "FileHandler",
    "AddonFilesHandler",
    "LookupHandler",
    "ChangesHandler",
    "ServiceHandler",
    "OldAddonHandler",
    "OldAddonsHandler",
    "RegistrationsHandler",
    "JobHandler",
    "OldHashHandler",
    "LBHeartbeatHandler",
    "HeartbeatHandler",
    "VersionHandler",
    "MetricsHandler",
    "APIHandler",
    "NotFoundHandler",
]


def not_found(message: str, details: Dict[str, Any], max_age: int = -1) -> APIError:
    headers = {"Cache-Control": cache_control(max_age)} if max_age >= 0 else {}
    return APIError(404, ERRNO.MISSING_RESOURCE, message, details, headers=headers)


class FileHandler(BaseHandler):
    """``/v1/addons/{addon_id}/files/{sha256}``: ``GET``/``HEAD`` (200, 410 or 404),
    and the Hawk-authenticated ``PUT`` (register) and ``DELETE`` (revoke).

    Not a streaming handler, to keep the hot GET as cheap as it can be: a PUT
    body is small, and the HTTP server's own limit bounds it.
    """

    endpoint = "file"

    def get(self, addon_id: str, sha256: str) -> Optional[Awaitable[None]]:
        # Not a coroutine: a cached answer (nearly every one) is written at once.
        key = check_addon_id(addon_id), check_sha256(sha256)
        answer = self.registry.cached_answer(key)
        if answer is MISSING:
            return self.fill(key)
        self.answer(key, answer)
        return None

    head = get

    async def fill(self, key: Key) -> None:
        # Counted in flight: a process that is stopping answers the misses it began
        # before it closes its connections and storage.
        self.count_in_flight()
        self.answer(key, await self.registry.answer(key))

    def answer(self, key: Key, answer: Answer) -> None:
        if answer.record is None:
            raise not_found(
                "this file is not registered",
                {"addon_id": key[0], "sha256": key[1]},
                self.config.http_negative_max_age,
            )
        self.set_header("Cache-Control", cache_control(self.config.http_max_age))
        self.set_header("Etag", answer.etag)
        if not answer.body:
            raise self.gone(answer.record)
        if not self.not_modified():
            self.finish(answer.body)

    def gone(self, record: Record) -> APIError:
        return APIError(
            410,
            ERRNO.RESOURCE_GONE,
            "this file's registration was revoked",
            headers={
                "Cache-Control": cache_control(self.config.http_max_age),
                "Etag": f'"{record.serial}"',
            },
            body=record.to_dict(),
        )

    def prepare(self) -> None:
        if self.request.method in ("PUT", "DELETE"):
            self.count_in_flight()
            if len(self.request.body) > self.config.max_body_size:
                raise self.too_large()

    async def put(self, addon_id: str, sha256: str) -> None:
        await self.authenticate()
        key = check_addon_id(addon_id), check_sha256(sha256)
        version = inputs.put_version(self.raw_body, self.request.headers.get("Content-Type"))
        [applied] = await self.registry.write([Operation("register", *key, version)])
        assert applied.record is not None  # a registration always leaves a record
        self.respond(applied.record.to_dict(), 201 if applied.created else 200)

    async def delete(self, addon_id: str, sha256: str) -> None:
        await self.authenticate()
        key = check_addon_id(addon_id), check_sha256(sha256)
        [applied] = await self.registry.write([Operation("revoke", *key)])
        if applied.record is None:
            raise not_found("this file is not registered", {"addon_id": key[0], "sha256": key[1]})
        self.respond(applied.record.to_dict())


class AddonFilesHandler(BaseHandler):
    """``GET /v1/addons/{addon_id}/files``: every file of an add-on."""

    endpoint = "addon_files"

    async def get(self, addon_id: str) -> None:
        self.count_in_flight()  # may wait for storage (see FileHandler.fill)
        records = await self.registry.addon_files(check_addon_id(addon_id))
        if not records:
            raise not_found(
                "this add-on has no registered files",
                {"addon_id": addon_id},
                self.config.http_negative_max_age,
            )
        self.set_header("Cache-Control", cache_control(self.config.http_max_age))
        self.set_header("Etag", f'"{max(r.serial for r in records)}-{len(records)}"')
        if not self.not_modified():
            self.finish(media.addon_files_body(addon_id, records))

    head = get


class LookupHandler(BodyHandler):
    """``POST /v1/lookup``: many files at once, answers in request order."""

    endpoint = "lookup"

    async def post(self) -> None:
        as_msgpack = media.wants_msgpack(self.request.headers.get("Accept"))
        max_lookup = self.config.max_lookup
        pairs = inputs.lookup_pairs(self.raw_body, self.request.headers.get("Content-Type"))
        if pairs is not None:
            inputs.checked_list(pairs, "files", max_lookup, "max_lookup")
            items = self.registry.memoised_items(pairs)
            if items is None:
                items = await self.registry.lookup_items(inputs.checked_keys(pairs))
        else:  # not the canonical shape: the general decoder says what is wrong, if anything
            files = self.body(msgpack_allowed=True).get("files")
            keys = inputs.lookup_keys(inputs.checked_list(files, "files", max_lookup, "max_lookup"))
            items = await self.registry.lookup_items(keys)
        self.set_header("Content-Type", media.MSGPACK if as_msgpack else media.JSON_UTF8)
        self.set_header("Vary", "Accept")
        self.finish(self.registry.lookup_body(items, as_msgpack))


class ChangesHandler(BaseHandler):
    """``GET /v1/changes?since=S&limit=N``: the change feed."""

    endpoint = "changes"

    async def get(self) -> None:
        arg = self.get_query_argument
        since = inputs.int_argument(arg("since", None, strip=False), "since", 0, 0, 2**63 - 1)
        limit = inputs.int_argument(arg("limit", None, strip=False), "limit", 1000, 1, 10000)
        self.count_in_flight()  # waits for storage (see FileHandler.fill)
        records = await self.registry.changes(since, limit)
        self.set_header("Cache-Control", "no-cache")
        self.finish(
            media.encode_json(
                {
                    "changes": [r.to_dict() for r in records],
                    "next_since": records[-1].serial if records else since,
                }
            )
        )


class ServiceHandler(BaseHandler):
    """``GET /v1/``: what this service is and its public settings."""

    endpoint = "service"

    def get(self) -> None:
        self.finish(
            media.encode_json(
                {
                    "project_name": "addonreg",
                    "project_version": __version__,
                    "http_api_version": "1",
                    "url": f"{self.request.protocol}://{self.request.host}/v1/",
                    "settings": self.config.public(),
                }
            )
        )


class FilterHandler(BaseHandler):
    """``GET /v1/filter`` (the signed index) and ``GET /v1/filter/<sha256>.bin`` (its files),
    from ``filter_dir`` (written by ``addonreg filter``); nginx serves the same files."""

    endpoint = "filter"

    def get(self, name: Optional[str] = None) -> None:
        root = os.path.join(self.config.filter_dir, "filter") if self.config.filter_dir else ""
        path = os.path.join(root, f"{name}.bin" if name else "latest.json")
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            raise not_found(
                "no filter is published here" if not name else "no such filter file", {}, 60
            ) from None
        # Files are named by their content: immutable. The index changes with each delta.
        self.set_header(
            "Cache-Control", "public, max-age=31536000, immutable" if name else "public, max-age=60"
        )
        self.set_header("Content-Type", "application/octet-stream" if name else "application/json")
        self.finish(data)

    head = get


class OldAddonHandler(BodyHandler):
    """``POST /addon`` ``{id, sha256}`` -> ``{id, sha256, registered}`` (2013 API)."""

    endpoint = "old_addon"

    async def post(self) -> None:
        addon_id, sha256 = inputs.legacy_pair(self.body(exact=True))
        key = inputs.legacy_key(addon_id, sha256)
        record = None if key is None else await self.registry.file(key)
        self.respond(
            {
                "id": addon_id,
                "sha256": sha256,
                "registered": record is not None and record.status != REVOKED,
            }
        )


class OldAddonsHandler(BodyHandler):
    """``POST /addons`` ``{addons: [{id, sha256}, ...]}`` (2013 API)."""

    endpoint = "old_addons"

    async def post(self) -> None:
        max_lookup = self.config.max_lookup
        pairs = inputs.legacy_pairs(self.raw_body)
        if pairs is not None:
            inputs.checked_list(pairs, "addons", max_lookup, "max_lookup", empty_ok=True)
            memoised = self.registry.memoised_items(pairs)
            if memoised is not None:  # every key checked and normalised: echoed as it is
                self.set_header("Content-Type", media.JSON_UTF8)
                self.finish(self.registry.legacy_body(memoised))
                return
        items = inputs.checked_list(
            self.body(exact=True).get("addons"),
            "addons",
            max_lookup,
            "max_lookup",
            empty_ok=True,
        )
        pairs, keys = inputs.legacy_items(items)
        registered = await self.registry.registered(keys)
        self.respond(
            {
                "addons": [
                    {"id": a, "sha256": s, "registered": r} for (a, s), r in zip(pairs, registered)
                ]
            }
        )


class RegistrationsHandler(BodyHandler):
    """``POST /v1/registrations``: many operations, all valid or none written."""

    endpoint = "registrations"

    async def post(self) -> None:
        owner = await self.authenticate()
        kind = self.request.headers.get("Content-Type")
        items = inputs.operation_items(self.raw_body, kind)
        if items is None or not (media.is_json(kind) or media.is_msgpack(kind)):
            # Not the canonical shape, or a Content-Type to refuse: the general decoder.
            items = self.body(msgpack_allowed=True, write=True).get("operations")
        items = inputs.checked_list(items, "operations", self.config.max_write, "max_write")
        ops = inputs.operations(items)
        if "respond-async" in self.request.headers.get("Prefer", "").lower():
            job_id = await self.registry.write_async(owner, ops)
            self.set_header("Location", f"/v1/jobs/{job_id}")
            self.set_header("Preference-Applied", "respond-async")
            self.respond({"job": job_id, "status": "queued"}, 202, negotiate=True)
            return
        results = await self.registry.write(ops)
        self.respond(
            {"results": [result_item(op, a) for op, a in zip(ops, results)]}, negotiate=True
        )


class JobHandler(BodyHandler):
    """``GET /v1/jobs/{id}``: an asynchronous write's state (its owner only)."""

    endpoint = "jobs"

    async def get(self, job_id: str) -> None:
        owner = await self.authenticate()
        job = await self.registry.job(job_id) if len(job_id) <= 64 else None
        if job is None or job.owner != owner:
            raise not_found("no such job", {})
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
        addon_id, sha256 = inputs.legacy_pair(self.body(write=True))
        await self.registry.write(
            [Operation("register", check_addon_id(addon_id), check_sha256(sha256))]
        )
        self.respond({"id": addon_id, "sha256": sha256, "registered": True}, 202)


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
        body: Dict[str, Any] = {name: "ok" if ok else "error" for name, ok in checks.items()}
        nodes = await self.registry.storage_nodes()
        if nodes:
            body["nodes"] = nodes
        self.set_header("Cache-Control", "no-store")
        if all(checks.values()):
            self.finish(media.encode_json(body))
            return
        failed = ", ".join(sorted(n for n, ok in checks.items() if not ok))
        raise APIError(503, ERRNO.BACKEND, f"failing checks: {failed}", {"checks": body}, body=body)


class VersionHandler(BaseHandler):
    endpoint = "version"

    # Tornado calls initialize with the route's keywords: the ones every handler
    # takes, and this route's own, by name (a keyword the base's signature lacks).
    def initialize(  # type: ignore[override]
        self, *, version: Dict[str, str], **deps: Any
    ) -> None:
        super().initialize(**deps)
        self.version = version

    def get(self) -> None:
        self.finish(media.encode_json(self.version))


class MetricsHandler(BaseHandler):
    """``GET /__metrics__``: Prometheus text format, every process of the host."""

    endpoint = "metrics"

    def initialize(  # type: ignore[override]  # as VersionHandler's
        self, *, pump: Optional[metrics.MetricsPump], **deps: Any
    ) -> None:
        super().initialize(**deps)
        self.pump = pump

    def get(self) -> None:
        if self.pump is not None:
            self.pump.pump()  # this process's latest, not a second old
        self.set_header("Content-Type", metrics.CONTENT_TYPE)
        self.set_header("Cache-Control", "no-store")
        self.finish(metrics.exposition())


class APIHandler(BaseHandler):
    """``GET /__api__``: the OpenAPI document, YAML or (``Accept``) JSON."""

    endpoint = "api"

    def get(self) -> None:
        doc = apidoc.document().negotiate(self.request.headers.get("Accept"))
        self.set_header("Content-Type", doc.content_type)
        self.set_header("Vary", "Accept")
        self.set_header("Cache-Control", cache_control(self.config.http_max_age))
        self.set_header("Etag", doc.etag)
        if not self.not_modified():
            self.finish(doc.body)

    head = get


class NotFoundHandler(BaseHandler):
    endpoint = "not_found"

    def prepare(self) -> None:
        raise not_found("no such resource", {})
