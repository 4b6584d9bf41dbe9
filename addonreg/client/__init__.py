"""addonreg's client library: check files, and (for AMO) register and revoke them.

>>> from addonreg.client import LookupClient, sha256_file        # doctest: +SKIP
>>> with LookupClient("http://127.0.0.1:8000") as client:        # doctest: +SKIP
...     client.check("fx@example.com", sha256_file("fx.xpi")).status
'registered'

* :class:`LookupClient`, :class:`AsyncLookupClient` — ``check``, ``check_many``,
  ``service_info``.
* :class:`WriterClient`, :class:`AsyncWriterClient` — also ``register``,
  ``revoke``, ``register_many``, ``job``, ``wait_for_job`` (Hawk).
* Results: :class:`CheckResult`, :class:`WriteResult`, :class:`Job`,
  :class:`Operation`, :class:`ServiceInfo`.
* Errors: :class:`AddonregError` and its subclasses.
* :func:`sha256_file`; :class:`RetryPolicy` to tune retries.

What the clients guarantee is in :mod:`addonreg.client.clients`; the retry
rules in :mod:`addonreg.client.retry`. Quickstarts: ``docs/quickstart-checker.md``
and ``docs/quickstart-writer.md``.
"""

from ._core import DEFAULT_SERVER, Credentials, FilterReader
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
    AuthenticationError,
    InvalidRequestError,
    JobTimeout,
    NotFoundError,
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
    "AsyncLookupClient",
    "AsyncWriterClient",
    "AuthenticationError",
    "CheckResult",
    "Credentials",
    "FilterReader",
    "InvalidRequestError",
    "Job",
    "JobTimeout",
    "LookupClient",
    "NotFoundError",
    "Operation",
    "RetryPolicy",
    "ServiceInfo",
    "TooLargeError",
    "UnavailableError",
    "WriteResult",
    "WriterClient",
    "environment_credentials",
    "server_url",
    "sha256_file",
]
