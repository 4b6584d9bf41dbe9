"""The URL table: routes to handlers, each with its dependencies."""

from __future__ import annotations

import json
import os
import subprocess
from typing import TYPE_CHECKING, Dict, Optional

import tornado.web

from . import __version__
from . import handlers as h
from .hawk import HawkAuthenticator
from .logs import log_request
from .metrics import MetricsPump
from .registry import Registry
from .web import InFlight

if TYPE_CHECKING:
    from .config import Settings

__all__ = ["make_app", "version_info"]

# Empty segments too: the handler answers an empty id or hash 400 (the identifier
# rules), as any other bad one, not 404 "no such resource".
_ADDON = r"([^/]*)"
_SHA = r"([^/]*)"


def version_info() -> Dict[str, str]:
    """``/__version__``: from ``version.json`` (written at build time) or the checkout."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        with open(os.path.join(root, "version.json"), encoding="utf-8") as fh:
            data = json.load(fh)
        return {k: str(data.get(k, "")) for k in ("source", "version", "commit", "build")}
    except (OSError, ValueError, AttributeError):
        pass
    try:
        commit = subprocess.run(
            ["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "source": "addonreg",
        "version": __version__,
        "commit": commit or "unknown",
        "build": "",
    }


def make_app(
    registry: Registry,
    settings: Settings,
    auth: HawkAuthenticator,
    in_flight: InFlight,
    version: Optional[Dict[str, str]] = None,
    pump: Optional[MetricsPump] = None,
) -> tornado.web.Application:
    """The application: every route with the handler's dependencies."""
    deps = {"registry": registry, "settings": settings, "auth": auth, "in_flight": in_flight}
    routes = [
        (rf"/v1/addons/{_ADDON}/files/{_SHA}", h.FileHandler, deps),
        (rf"/v1/addons/{_ADDON}/files", h.AddonFilesHandler, deps),
        (r"/v1/lookup", h.LookupHandler, deps),
        (r"/v1/changes", h.ChangesHandler, deps),
        (r"/v1/filter", h.FilterHandler, deps),
        (r"/v1/filter/([0-9a-f]{64})\.bin", h.FilterHandler, deps),
        (r"/v1/?", h.ServiceHandler, deps),
        (r"/addon", h.OldAddonHandler, deps),
        (r"/addons", h.OldAddonsHandler, deps),
        (r"/v1/registrations", h.RegistrationsHandler, deps),
        (r"/v1/jobs/([^/]+)", h.JobHandler, deps),
        (r"/hash", h.OldHashHandler, deps),
        (r"/__lbheartbeat__", h.LBHeartbeatHandler, deps),
        (r"/__heartbeat__", h.HeartbeatHandler, deps),
        (r"/__version__", h.VersionHandler, dict(deps, version=version or version_info())),
        (r"/__metrics__", h.MetricsHandler, dict(deps, pump=pump)),
        (r"/__api__", h.APIHandler, deps),
    ]
    return tornado.web.Application(
        routes,
        default_handler_class=h.NotFoundHandler,
        default_handler_args=deps,
        compress_response=False,
        log_function=log_request,
    )
