"""addonreg's client library: check files, and (for AMO) register and revoke them.

Its own distribution (``client/`` in the addonreg repository: ``pip install
./client``), with no server dependency: httpx, mohawk, and msgpack when the
``msgpack`` extra is installed. The server's ``addonreg.client`` re-exports it.

>>> from addonreg_client import LookupClient, sha256_file        # doctest: +SKIP
>>> with LookupClient("http://127.0.0.1:8000") as client:        # doctest: +SKIP
...     client.check("fx@example.com", sha256_file("fx.xpi")).status
'registered'

* :class:`LookupClient`, :class:`AsyncLookupClient` — ``check``, ``check_many``,
  ``service_info``.
* :class:`WriterClient`, :class:`AsyncWriterClient` — also ``register``,
  ``revoke``, ``write_many``, ``job``, ``wait_for_job`` (Hawk).
* Results: :class:`CheckResult`, :class:`WriteResult`, :class:`Job`,
  :class:`Operation`, :class:`ServiceInfo`.
* Errors: :class:`AddonregError` and its subclasses.
* :class:`OfflineFilter`: what a client's ``filter=`` must offer (the
  service's ``addonreg.filter.FilterReader`` does).
* :func:`sha256_file`; :class:`RetryPolicy` to tune retries and the deadline;
  :class:`HawkAuth`, Hawk as an ``httpx.Auth`` for any httpx client.

What the clients guarantee is in :mod:`addonreg_client.clients`; the retry
rules in :mod:`addonreg_client.retry`. Quickstarts: ``docs/quickstart-checker.md``
and ``docs/quickstart-writer.md``.
"""

import warnings
from typing import TYPE_CHECKING

from ._core import DEFAULT_SERVER, OfflineFilter
from ._version import __version__
from .auth import Credentials, HawkAuth
from .clients import (
    ENV_CLIENT_ID,
    ENV_CLIENT_KEY,
    ENV_SERVER,
    AsyncLookupClient,
    AsyncWriterClient,
    LookupClient,
    WriterClient,
    environment_credentials,
    server_url,
)
from .errors import (
    AddonregError,
    AnswerTooLarge,
    AuthenticationError,
    BadAnswerError,
    DeadlineExceeded,
    InvalidRequestError,
    JobTimeout,
    NotFoundError,
    RedirectRefused,
    TooLargeError,
    UnavailableError,
)
from .hashing import sha256_file
from .results import CheckResult, Job, Operation, ServiceInfo, WriteResult
from .retry import RetryPolicy

__all__ = [
    "DEFAULT_SERVER",
    "ENV_CLIENT_ID",
    "ENV_CLIENT_KEY",
    "ENV_SERVER",
    "AddonregError",
    "AnswerTooLarge",
    "AsyncLookupClient",
    "AsyncWriterClient",
    "AuthenticationError",
    "BadAnswerError",
    "CheckResult",
    "Credentials",
    "DeadlineExceeded",
    "HawkAuth",
    "InvalidRequestError",
    "Job",
    "JobTimeout",
    "LookupClient",
    "NotFoundError",
    "OfflineFilter",
    "Operation",
    "RedirectRefused",
    "RetryPolicy",
    "ServiceInfo",
    "TooLargeError",
    "UnavailableError",
    "WriteResult",
    "WriterClient",
    "__version__",
    "environment_credentials",
    "server_url",
    "sha256_file",
]

# Names of earlier releases, kept working with a DeprecationWarning (and left out of
# __all__, so that a star import does not warn). Type checkers see plain aliases,
# not a module __getattr__ that would let any misspelt name through.
_DEPRECATED_NAMES = {"FilterReader": "OfflineFilter"}

if TYPE_CHECKING:
    FilterReader = OfflineFilter
else:

    def __getattr__(name: str) -> object:
        new = _DEPRECATED_NAMES.get(name)
        if new is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        warnings.warn(
            f"addonreg_client.{name} is deprecated; use addonreg_client.{new}",
            DeprecationWarning,
            stacklevel=2,
        )
        return globals()[new]
