"""The OpenAPI document of the HTTP API, as ``GET /__api__`` serves it.

The document is ``docs/openapi.yaml`` (shipped inside the package as
``addonreg/openapi.yaml``). :func:`document` reads it once per process and
keeps both representations ready: the YAML exactly as written, and the same
document as JSON. Each has its own strong ``ETag`` (a hash of its bytes), so a
client that sent ``Accept: application/json`` never revalidates against the
YAML's validator.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.resources

import yaml

from . import media

__all__ = ["YAML", "APIDocument", "document"]

YAML = "application/yaml"
# libyaml when PyYAML was built with it: several times faster on the document
# (bench/results/README.md has the figure).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclasses.dataclass(frozen=True)
class Representation:
    body: bytes
    content_type: str
    etag: str


def _representation(body: bytes, content_type: str) -> Representation:
    return Representation(body, content_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')


@dataclasses.dataclass(frozen=True)
class APIDocument:
    """The document in YAML (the default) and JSON (when ``Accept`` prefers it)."""

    yaml: Representation
    json: Representation

    def negotiate(self, accept: str | None) -> Representation:
        """JSON when ``Accept`` names ``application/json`` before any YAML type."""
        for part in (accept or "").lower().split(","):
            kind = part.split(";", 1)[0].strip()
            if kind in (YAML, "application/x-yaml", "text/yaml"):
                return self.yaml
            if media.is_json(kind):
                return self.json
        return self.yaml


@functools.lru_cache(maxsize=1)
def document() -> APIDocument:
    """The API document (read and converted once per process)."""
    text = importlib.resources.files("addonreg").joinpath("openapi.yaml").read_bytes()
    return APIDocument(
        _representation(text, YAML + "; charset=UTF-8"),
        _representation(
            media.encode_json(yaml.load(text, Loader=_LOADER)), media.JSON + "; charset=UTF-8"
        ),
    )
