"""Banded GF(2) linear systems ("ribbon"): the one building block of the filter.

A *layer* stores, for a set of 128-bit keys, a k-bit value per key: k bit
planes of m bits each. A key hashes (with the layer's salt) to a start
position ``s`` and a w-bit coefficient ``c`` (bit 0 always set); its value's
bit j is the parity of ``c AND plane_j[s .. s+w-1]``. The builder chooses the
planes by solving the banded system "value(key) = wanted(key)" for every key
of the set, so the layer answers exactly on that set and something
pseudo-random everywhere else:

* as a *filter*, the wanted value is a k-bit fingerprint of the key, so a key
  outside the set matches with probability 2^-k;
* as a *retrieval* structure (k = 1), the wanted value is any bit per key.

Why our own code: of the libraries checked, none does GF(2) retrieval or
k-bit filters for a chosen k: pyfusefilter has fixed 8/16-bit xor/fuse
filters only (and its wrapper hashes ``str(item)`` with an xxhash call that
xxhash 4 refuses), rbloom is a Bloom filter (filtercascade's layer type).
On the same keys these layers are smaller than a cascade of Fuse8 filters
and than filtercascade, and much smaller with the add-on stage on a
clustered registry (bench/filter.py measures them: docs/filter.md, "Sizes",
and bench/results/filter.md).

Everything here is specified byte for byte in docs/filter.md ("Layers").
Solving is plain Python over Python ints (128-bit rows); hashing and
evaluating are numpy over all keys at once, plus a pure-Python single-key
path for readers without numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

MASK64 = (1 << 64) - 1
# Odd 64-bit constants (golden ratio and two xxHash primes): XORed into the
# layer hash to derive the coefficient halves and the fingerprint.
C_LO = 0x9E3779B97F4A7C15
C_HI = 0xC2B2AE3D27D4EB4F
C_FP = 0x165667B19E3779F9
_F1 = 0xFF51AFD7ED558CCD
_F2 = 0xC4CEB9FE1A85EC53

MAX_W = 128
MAX_K = 32
# Keys are evaluated this many at a time: the temporaries stay in the CPU cache
# (measured faster than whole arrays of millions of keys: bench/results/README.md).
CHUNK = 1 << 14
# Planes get this many zero bytes of padding in memory so that a 128-bit
# window at any start can read three whole 64-bit words.
_PAD = 24

_u = np.uint64


def fmix64(x: int) -> int:
    """MurmurHash3's 64-bit finalizer (a bijection on 64-bit words), on a Python int."""
    x ^= x >> 33
    x = (x * _F1) & MASK64
    x ^= x >> 33
    x = (x * _F2) & MASK64
    return x ^ (x >> 33)


def fmix64_np(x: np.ndarray) -> np.ndarray:
    """``fmix64`` over a uint64 array (wrapping multiplication; a new array)."""
    y = x >> _u(33)
    y ^= x
    y *= _u(_F1)
    t = y >> _u(33)
    y ^= t
    y *= _u(_F2)
    np.right_shift(y, _u(33), out=t)
    y ^= t
    return y


def key_hash(k0: int, k1: int, salt: int) -> int:
    """The 64-bit layer hash ``b`` of key (k0, k1) under ``salt``."""
    return fmix64(fmix64(k0 ^ salt) ^ k1)


def key_hash_np(k0: np.ndarray, k1: np.ndarray, salt: int) -> np.ndarray:
    return fmix64_np(fmix64_np(k0 ^ _u(salt)) ^ k1)


def coef_np(b: np.ndarray, w: int) -> Tuple[np.ndarray, np.ndarray]:
    lo = fmix64_np(b ^ _u(C_LO)) | _u(1)
    hi = fmix64_np(b ^ _u(C_HI))
    if w <= 64:
        hi[:] = 0
        if w < 64:
            lo &= _u((1 << w) - 1)
    elif w < 128:
        hi &= _u((1 << (w - 64)) - 1)
    return lo, hi


def fingerprint_np(b: np.ndarray, k: int) -> np.ndarray:
    return fmix64_np(b ^ _u(C_FP)) & _u((1 << k) - 1)


def start_np(b: np.ndarray, m: int, w: int) -> np.ndarray:
    return ((b >> _u(32)) * _u(m - w + 1)) >> _u(32)


@dataclass(frozen=True)
class Layer:
    """One solved layer: ``k`` planes of ``m`` bits, band width ``w``, hash salt."""

    m: int
    w: int
    k: int
    salt: int
    planes: bytes  # k * m/8 bytes, plane 0 first, bit i of a plane = byte i>>3, bit i&7
    _words: List[np.ndarray] = field(default_factory=list, repr=False, compare=False)
    _bytes: List[bytes] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        nbytes = self.m // 8
        if (
            self.m % 8
            or self.w % 8
            or not 8 <= self.w <= min(self.m, MAX_W)
            or not 1 <= self.k <= MAX_K
            or len(self.planes) != self.k * nbytes
        ):
            raise ValueError("inconsistent layer parameters")
        words = []
        for j in range(self.k):
            plane = self.planes[j * nbytes : (j + 1) * nbytes]
            padded = plane + bytes(_PAD + (-nbytes) % 8)
            words.append(np.frombuffer(padded, dtype="<u8"))
        object.__setattr__(self, "_words", words)
        object.__setattr__(
            self, "_bytes", [self.planes[j * nbytes : (j + 1) * nbytes] for j in range(self.k)]
        )

    @property
    def nbytes(self) -> int:
        return 16 + len(self.planes)

    # -- evaluation --------------------------------------------------------

    def _parity(
        self, j: int, q: np.ndarray, r: np.ndarray, r2: np.ndarray, lo: np.ndarray, hi: np.ndarray
    ) -> np.ndarray:
        """Bit j of the value: parity of coefficient AND plane j's window (uint8 0/1)."""
        words = self._words[j]
        one = _u(1)
        w1 = words[q + 1]
        x = (words[q] >> r) | ((w1 << one) << r2)
        x &= lo
        par = np.bitwise_count(x)
        if self.w > 64:
            y = (w1 >> r) | ((words[q + 2] << one) << r2)
            y &= hi
            par += np.bitwise_count(y)
        return par & np.uint8(1)

    def _prepare(self, k0: np.ndarray, k1: np.ndarray):
        b = key_hash_np(k0, k1, self.salt)
        s = start_np(b, self.m, self.w)
        lo, hi = coef_np(b, self.w)
        r = s & _u(63)
        return b, (s >> _u(6)).astype(np.intp), r, _u(63) - r, lo, hi

    def eval_np(self, k0: np.ndarray, k1: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(value, fingerprint) of every key, as uint64 arrays."""
        if len(k0) > CHUNK:
            parts = [
                self.eval_np(k0[i : i + CHUNK], k1[i : i + CHUNK]) for i in range(0, len(k0), CHUNK)
            ]
            return np.concatenate([v for v, _ in parts]), np.concatenate([f for _, f in parts])
        b, q, r, r2, lo, hi = self._prepare(k0, k1)
        value = np.zeros(len(k0), dtype=np.uint64)
        for j in range(self.k):
            value |= self._parity(j, q, r, r2, lo, hi).astype(np.uint64) << _u(j)
        return value, fingerprint_np(b, self.k)

    def match_np(self, k0: np.ndarray, k1: np.ndarray) -> np.ndarray:
        """value == fingerprint, for every key (bool array).

        Plane by plane, dropping the keys already mismatched: a non-member
        survives a plane with probability 1/2, so this costs ~2 planes, not k.
        """
        if len(k0) > CHUNK:
            return np.concatenate(
                [
                    self.match_np(k0[i : i + CHUNK], k1[i : i + CHUNK])
                    for i in range(0, len(k0), CHUNK)
                ]
            )
        b, q, r, r2, lo, hi = self._prepare(k0, k1)
        fp = fingerprint_np(b, self.k)
        one = _u(1)
        ok = self._parity(0, q, r, r2, lo, hi) == (fp & one).astype(np.uint8)
        if self.k > 1:
            ok &= self._parity(1, q, r, r2, lo, hi) == ((fp >> one) & one).astype(np.uint8)
        if self.k > 2:
            # ~1/4 of non-members are left: gather them once, finish the planes on them.
            idx = np.flatnonzero(ok)
            q, r, r2, lo, hi, fp = (x[idx] for x in (q, r, r2, lo, hi, fp))
            left = np.ones(len(idx), dtype=bool)
            for j in range(2, self.k):
                left &= self._parity(j, q, r, r2, lo, hi) == ((fp >> _u(j)) & one).astype(np.uint8)
            ok[idx] = left
        return ok

    def _one(self, k0: int, k1: int) -> Tuple[int, int, int, int]:
        b = key_hash(k0, k1, self.salt)
        w = self.w
        s = ((b >> 32) * (self.m - w + 1)) >> 32
        c = ((fmix64(b ^ C_LO) | 1) | (fmix64(b ^ C_HI) << 64)) & ((1 << w) - 1)
        return b, s >> 3, s & 7, c

    def eval_one(self, k0: int, k1: int) -> Tuple[int, int]:
        """(value, fingerprint) of one key, in pure Python."""
        b, lo, sh, c = self._one(k0, k1)
        value = 0
        for j, plane in enumerate(self._bytes):
            window = int.from_bytes(plane[lo : lo + 17], "little") >> sh
            value |= ((window & c).bit_count() & 1) << j
        return value, fmix64(b ^ C_FP) & ((1 << self.k) - 1)

    def match_one(self, k0: int, k1: int) -> bool:
        """value == fingerprint for one key (stops at the first differing plane)."""
        b, lo, sh, c = self._one(k0, k1)
        fp = fmix64(b ^ C_FP)
        for plane in self._bytes:
            window = int.from_bytes(plane[lo : lo + 17], "little") >> sh
            if ((window & c).bit_count() ^ fp) & 1:
                return False
            fp >>= 1
        return True


def layer_size(n: int, attempt: int) -> Tuple[int, int]:
    """(m, w) for ``n`` equations at build attempt ``attempt`` (more room on retries).

    A banded system needs more spare columns the more equations it has (its
    worst local crowding grows with n). Measured with w = 128: 3 % spare
    solves 10^4 equations almost always, 3.5 % fails 2 in 5 at 3*10^5; so
    3 % + 0.4 % per doubling above 10^4 (5 % at 3*10^5), plus 16 columns,
    plus one more % every second failed attempt.
    """
    slack = 1.03 + 0.004 * math.log2(max(n, 10_000) / 10_000) + 0.01 * (attempt // 2)
    m = 8 * math.ceil((n * slack + 16 + 8 * (attempt // 2)) / 8)
    return m, min(MAX_W, m)


def solve(
    starts: Sequence[int], coefs: Sequence[int], values: Sequence[int], m: int, w: int, k: int
) -> Optional[bytes]:
    """Planes (k * m/8 bytes) satisfying every equation, or None when inconsistent.

    Equations must be sorted by start. Banded Gaussian elimination: each row is
    reduced against the stored rows until its leading bit lands on a free
    pivot; then back-substitution from the last pivot down, free variables 0.
    """
    rows = [0] * m
    rvals = [0] * m
    for s, c, v in zip(starts, coefs, values):
        while True:
            r = rows[s]
            if not r:
                rows[s] = c
                rvals[s] = v
                break
            c ^= r
            v ^= rvals[s]
            if not c:
                if v:
                    return None
                break
            tz = (c & -c).bit_length() - 1
            c >>= tz
            s += tz
    mask = (1 << w) - 1
    planes = []
    for j in range(k):
        out = bytearray(m)
        window = 0
        for i in range(m - 1, -1, -1):
            window = (window << 1) & mask
            c = rows[i]
            if c and (((rvals[i] >> j) ^ (c & window).bit_count()) & 1):
                window |= 1
                out[i] = 1
        planes.append(
            np.packbits(np.frombuffer(bytes(out), dtype=np.uint8), bitorder="little").tobytes()
        )
    return b"".join(planes)


class BuildError(RuntimeError):
    """A filter could not be built (or failed its own verification)."""


def build_layer(
    k0: np.ndarray,
    k1: np.ndarray,
    k: int,
    tag: int,
    values: Optional[np.ndarray] = None,
    max_attempts: int = 24,
) -> Layer:
    """Solve a layer over the given keys (already sorted and distinct).

    ``values`` None: a filter (wanted value = the key's k-bit fingerprint);
    else the wanted k-bit value of each key. The salt is ``tag << 32 | attempt``:
    attempt 0 first, then 1, 2, ... only when a system has no solution, so the
    same keys always give the same layer.
    """
    n = len(k0)
    for attempt in range(max_attempts):
        m, w = layer_size(n, attempt)
        salt = (tag << 32) | attempt
        b = key_hash_np(k0, k1, salt)
        s = start_np(b, m, w)
        lo, hi = coef_np(b, w)
        v = fingerprint_np(b, k) if values is None else values.astype(np.uint64)
        order = np.argsort(s, kind="stable")
        coefs = [a | (h << 64) for a, h in zip(lo[order].tolist(), hi[order].tolist())]
        planes = solve(s[order].tolist(), coefs, v[order].tolist(), m, w, k)
        if planes is not None:
            return Layer(m=m, w=w, k=k, salt=salt, planes=planes)
    raise BuildError(
        f"no solution for {n} keys after {max_attempts} attempts "
        "(two known keys with one 128-bit key and different answers?)"
    )
