"""Every response a test receives, checked against ``docs/openapi.yaml``.

:func:`check_response` is the one hook: ``tests/conftest.py``'s
``Client.fetch`` calls it on every answer, so the document cannot drift from
the code without an endpoint test failing. It validates with ``openapi-core``
(status documented, headers the document requires, body against the schema
of its ``Content-Type``, JSON or MessagePack).

What is exempt, and how:

* A request the document has no operation for — an unknown path (the
  default handler's ``404``) or a method a path does not list (``405``) — is
  held to the ``Error`` schema only, with status 404/errno 111 or
  405/errno 115; any other answer to it fails.
* A ``431`` (headers too large, answered by the listener before any
  handler) is held to the ``Error`` schema whatever the request was.
* Malformed HTTP (Tornado's bare ``400``, no body) never reaches this hook:
  ``tests/test_fuzz.py`` sends it (and its other generated requests, which it
  checks against its own expectations) with ``http.client``, not ``Client``;
  ``tests/test_limits.py`` and ``tests/test_nginx.py`` write raw bytes.
* Answers through nginx (``tests/test_deploy.py``, ``tests/test_static.py``)
  are held to the same document: nginx's own error pages use the error
  body, and its static files carry the service's headers.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jsonschema
import msgpack
import yaml
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.exceptions import OpenAPIError
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from werkzeug.datastructures import Headers, ImmutableMultiDict

__all__ = ["DOCUMENT_PATH", "ContractViolation", "check_response", "document"]

DOCUMENT_PATH = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "openapi.yaml"
)


class ContractViolation(AssertionError):
    """An answer the document does not allow."""


def _msgpack_loads(value: bytes, **_: str) -> Any:
    return msgpack.unpackb(value, raw=False, strict_map_key=False)


def _yaml_loads(value: bytes, **_: str) -> Any:
    return yaml.safe_load(value)


@functools.lru_cache(maxsize=1)
def document() -> dict:
    with open(DOCUMENT_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@functools.lru_cache(maxsize=1)
def _openapi() -> OpenAPI:
    config = Config(
        extra_media_type_deserializers={
            "application/msgpack": _msgpack_loads,
            "application/yaml": _yaml_loads,
        }
    )
    return OpenAPI.from_dict(document(), config=config)


@functools.lru_cache(maxsize=1)
def _error_validator() -> jsonschema.Draft202012Validator:
    schema = {"$ref": "#/components/schemas/Error", "components": document()["components"]}
    return jsonschema.Draft202012Validator(schema)


@dataclasses.dataclass
class _Request:
    """A request as openapi-core reads it (its ``Request`` protocol)."""

    host_url: str
    path: str
    method: str
    body: bytes | None
    content_type: str
    parameters: RequestParameters


@dataclasses.dataclass
class _Response:
    """A response as openapi-core reads it (its ``Response`` protocol)."""

    status_code: int
    headers: Headers
    data: bytes | None
    content_type: str


def _decode(body: bytes, content_type: str) -> Any:
    if "msgpack" in content_type:
        return _msgpack_loads(body)
    return json.loads(body)


def _check_error_body(
    method: str, url: str, status: int, content_type: str, body: bytes, errnos: Mapping[int, int]
) -> None:
    where = f"{method} {url} -> {status}"
    if errnos and status not in errnos:
        raise ContractViolation(
            f"{where}: no operation in docs/openapi.yaml for this request, "
            f"and the answer is not one of {sorted(errnos)}"
        )
    if method == "HEAD":
        return
    try:
        data = _decode(body, content_type)
    except ValueError as exc:
        raise ContractViolation(f"{where}: error body is not {content_type}: {exc}") from None
    errors = sorted(_error_validator().iter_errors(data), key=str)
    if errors:
        raise ContractViolation(f"{where}: not the Error body: {errors[0].message}")
    if errnos and data.get("errno") != errnos[status]:
        raise ContractViolation(f"{where}: errno {data.get('errno')}, expected {errnos[status]}")


def _reasons(exc: BaseException) -> list:
    """What the schema said, from the causes openapi-core chains."""
    reasons: list = []
    while exc is not None:
        for error in getattr(exc, "schema_errors", None) or ():
            path = "/".join(str(p) for p in error.absolute_path)
            reasons.append(f"{path or '(body)'}: {error.message}")
        exc = exc.__cause__  # type: ignore[assignment]
    return reasons


def check_response(
    method: str,
    url: str,
    request_headers: Mapping[str, str],
    request_body: bytes | None,
    status: int,
    response_headers: Mapping[str, str],
    body: bytes | None,
) -> None:
    """Raise :class:`ContractViolation` when the answer breaks ``docs/openapi.yaml``."""
    parts = urlsplit(url)
    response_type = (response_headers.get("Content-Type") or "").lower()
    if status == 431:
        _check_error_body(method, url, status, response_type, body or b"", {})
        return
    request = _Request(
        host_url=f"{parts.scheme}://{parts.netloc}",
        path=parts.path,
        method=method.lower(),
        body=request_body,
        content_type=(request_headers.get("Content-Type") or "").lower(),
        parameters=RequestParameters(
            query=ImmutableMultiDict(parse_qsl(parts.query, keep_blank_values=True)),
            header=Headers(dict(request_headers)),
            cookie=ImmutableMultiDict(),
            path={},
        ),
    )
    response = _Response(
        status, Headers(list(response_headers.items())), body if body else None, response_type
    )
    try:
        _openapi().validate_response(request, response)
    except (PathNotFound, OperationNotFound):
        _check_error_body(method, url, status, response_type, body or b"", {404: 111, 405: 115})
    except OpenAPIError as exc:  # what openapi-core found: say which rule failed
        detail = "; ".join(_reasons(exc))
        raise ContractViolation(
            f"{method} {url} -> {status} breaks docs/openapi.yaml: {exc!r}"
            + (f" ({detail})" if detail else "")
            + f"\nbody: {(body or b'')[:500]!r}"
        ) from None
