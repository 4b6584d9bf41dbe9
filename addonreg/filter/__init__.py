"""A downloadable filter of the whole registry (docs/filter.md).

Builder: :func:`build_base`, :func:`build_delta` (each verified against every
known key before it is returned) over :data:`FileStatus` records, :class:`KeySet`
(the hashed registry).
Publishing: :class:`FilterWriter`, :func:`sign_index`, :func:`make_index`.
Reading: :class:`FilterReader` (``status(addon_id, sha256)`` ->
``registered`` | ``revoked`` | ``not-in-filter``).
"""

from ..status import REGISTERED, REVOKED
from .build import BuildError, Built, build_base, build_delta, verify
from .filterfile import FilterFile, FormatError
from .index import (
    IndexVerificationError,
    canonical_bytes,
    index_bytes,
    key_id,
    load_private_key,
    load_public_key,
    make_index,
    sign_index,
    verify_index,
)
from .keys import FileStatus, KeySet, addon_key, file_key
from .reader import NOT_IN_FILTER, FilterReader, FilterRejected
from .writer import FilterWriter

__all__ = [
    "Built",
    "BuildError",
    "build_base",
    "build_delta",
    "verify",
    "FilterFile",
    "FormatError",
    "IndexVerificationError",
    "canonical_bytes",
    "index_bytes",
    "key_id",
    "load_private_key",
    "load_public_key",
    "make_index",
    "sign_index",
    "verify_index",
    "FileStatus",
    "KeySet",
    "addon_key",
    "file_key",
    "NOT_IN_FILTER",
    "REGISTERED",
    "REVOKED",
    "FilterReader",
    "FilterRejected",
    "FilterWriter",
]
