"""The filter file: parse, serialize, answer. docs/filter.md specifies every byte.

A file (base or delta, one format) is a header, an optional membership layer
and a list of *stages*. A stage looks at one key (the add-on's or the
file's) and is *positive* or not; the first positive stage gives the answer,
none positive gives the file's default answer. Each stage is exact on the
keys the builder gave it, so the whole file is exact on the known set.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from ..status import REGISTERED, REGISTERED_CODE, REVOKED, REVOKED_CODE
from .ribbon import Layer

MAGIC = b"AREGFILT"
VERSION = 1
KIND_BASE = 0
KIND_DELTA = 1
KEY_SCHEME = 1  # keys.py: add-on key SHA-256-128 of the length-prefixed id; file key fmix64

UNCHANGED = 0  # a delta's answer: ask the base; the others are status codes (status.py)
ANSWERS = {UNCHANGED: "unchanged", REGISTERED_CODE: REGISTERED, REVOKED_CODE: REVOKED}

ADDON = 0  # stage key kinds
FILE = 1

_HEADER = struct.Struct("<8sHBBQQ32sQQQQBBBB")
_LAYER = struct.Struct("<IBBHQ")
_STAGE = struct.Struct("<BBBBI")
HEADER_SIZE = _HEADER.size  # 96


class FormatError(ValueError):
    """Bytes that are not a valid filter file of a version we read."""


@dataclass(frozen=True)
class Stage:
    kind: int  # ADDON or FILE
    answer: int  # REGISTERED_CODE or REVOKED_CODE
    n_positive: int
    l1: Optional[Layer]  # filter: passes when value == fingerprint
    l2: Optional[Layer]  # retrieval, k = 1: positive when value == 1

    @property
    def nbytes(self) -> int:
        return _STAGE.size + sum(layer.nbytes for layer in (self.l1, self.l2) if layer)

    def positive_np(self, k0: np.ndarray, k1: np.ndarray) -> np.ndarray:
        pos = np.ones(len(k0), dtype=bool)
        if self.l1 is not None:
            pos = self.l1.match_np(k0, k1)
        if self.l2 is not None:
            idx = np.flatnonzero(pos)
            value, _ = self.l2.eval_np(k0[idx], k1[idx])
            pos[idx[value == 0]] = False
        return pos

    def positive_one(self, k0: int, k1: int) -> bool:
        if self.l1 is not None and not self.l1.match_one(k0, k1):
            return False
        return self.l2 is None or self.l2.eval_one(k0, k1)[0] == 1


@dataclass(frozen=True)
class FilterFile:
    kind: int
    serial: int
    base_serial: int  # a base: its own serial
    base_sha256: bytes  # a delta: SHA-256 of its base file; a base: 32 zero bytes
    n_files: int  # known files at serial
    n_addons: int  # known add-ons at serial
    n_revoked: int  # revoked known files at serial
    n_changed: int  # a delta: known files whose status differs from the base (new ones too)
    default: int
    membership: Optional[Layer]
    stages: Tuple[Stage, ...]

    @property
    def is_delta(self) -> bool:
        return self.kind == KIND_DELTA

    # -- answers -----------------------------------------------------------

    def answer_np(
        self, a0: np.ndarray, a1: np.ndarray, f0: np.ndarray, f1: np.ndarray
    ) -> np.ndarray:
        """The answer code (UNCHANGED or a status code) of every (add-on key, file key)."""
        out = np.full(len(f0), self.default, dtype=np.uint8)
        todo = np.arange(len(f0))
        for stage in self.stages:
            if not len(todo):
                break
            if stage.kind == ADDON:
                pos = stage.positive_np(a0[todo], a1[todo])
            else:
                pos = stage.positive_np(f0[todo], f1[todo])
            out[todo[pos]] = stage.answer
            todo = todo[~pos]
        return out

    def answer_one(self, a: Tuple[int, int], f: Tuple[int, int]) -> int:
        for stage in self.stages:
            if stage.positive_one(*(a if stage.kind == ADDON else f)):
                return stage.answer
        return self.default

    def member_np(self, f0: np.ndarray, f1: np.ndarray) -> np.ndarray:
        """False where the membership layer proves the file unknown (all True without one)."""
        if self.membership is None:
            return np.ones(len(f0), dtype=bool)
        return self.membership.match_np(f0, f1)

    def member_one(self, f: Tuple[int, int]) -> bool:
        if self.membership is None:
            return True
        return self.membership.match_one(*f)

    # -- bytes -------------------------------------------------------------

    def to_bytes(self) -> bytes:
        mbits = self.membership.k if self.membership else 0
        parts = [
            _HEADER.pack(
                MAGIC,
                VERSION,
                self.kind,
                KEY_SCHEME,
                self.serial,
                self.base_serial,
                self.base_sha256,
                self.n_files,
                self.n_addons,
                self.n_revoked,
                self.n_changed,
                self.default,
                len(self.stages),
                mbits,
                0,
            )
        ]
        if self.membership:
            parts.append(_layer_bytes(self.membership))
        for st in self.stages:
            flags = (1 if st.l1 else 0) | (2 if st.l2 else 0)
            parts.append(_STAGE.pack(st.kind, st.answer, flags, 0, st.n_positive))
            for layer in (st.l1, st.l2):
                if layer:
                    parts.append(_layer_bytes(layer))
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> "FilterFile":
        data = bytes(data)
        if len(data) < HEADER_SIZE or data[:8] != MAGIC:
            raise FormatError("not an addonreg filter file")
        (
            _,
            version,
            kind,
            scheme,
            serial,
            base_serial,
            base_sha,
            n_files,
            n_addons,
            n_revoked,
            n_changed,
            default,
            n_stages,
            mbits,
            reserved,
        ) = _HEADER.unpack_from(data)
        if version != VERSION:
            raise FormatError(f"filter format version {version}; this reader reads {VERSION}")
        if kind not in (KIND_BASE, KIND_DELTA) or scheme != KEY_SCHEME or reserved:
            raise FormatError("bad header")
        allowed = (UNCHANGED,) if kind == KIND_DELTA else (REGISTERED_CODE, REVOKED_CODE)
        if default not in allowed or (kind == KIND_DELTA and mbits):
            raise FormatError("bad header")
        off = HEADER_SIZE
        membership = None
        if mbits:
            membership, off = _read_layer(data, off)
            if membership.k != mbits:
                raise FormatError("membership layer width differs from the header")
        stages = []
        for _ in range(n_stages):
            if off + _STAGE.size > len(data):
                raise FormatError("truncated stage")
            skind, answer, flags, res, npos = _STAGE.unpack_from(data, off)
            off += _STAGE.size
            if (
                skind not in (ADDON, FILE)
                or answer not in (REGISTERED_CODE, REVOKED_CODE)
                or flags & ~3
                or res
            ):
                raise FormatError("bad stage")
            l1 = l2 = None
            if flags & 1:
                l1, off = _read_layer(data, off)
            if flags & 2:
                l2, off = _read_layer(data, off)
                if l2.k != 1:
                    raise FormatError("a stage's second layer must hold 1 bit")
            stages.append(Stage(skind, answer, npos, l1, l2))
        if off != len(data):
            raise FormatError("trailing bytes after the last stage")
        return cls(
            kind,
            serial,
            base_serial,
            base_sha,
            n_files,
            n_addons,
            n_revoked,
            n_changed,
            default,
            membership,
            tuple(stages),
        )


def _layer_bytes(layer: Layer) -> bytes:
    return _LAYER.pack(layer.m, layer.w, layer.k, 0, layer.salt) + layer.planes


def _read_layer(data: bytes, off: int) -> Tuple[Layer, int]:
    if off + _LAYER.size > len(data):
        raise FormatError("truncated layer")
    m, w, k, res, salt = _LAYER.unpack_from(data, off)
    off += _LAYER.size
    end = off + k * (m // 8)
    if res or end > len(data):
        raise FormatError("bad layer")
    try:
        layer = Layer(m=m, w=w, k=k, salt=salt, planes=data[off:end])
    except ValueError as exc:
        raise FormatError(str(exc)) from None
    return layer, end
