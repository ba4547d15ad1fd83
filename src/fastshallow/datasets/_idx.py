"""Reading IDX files (the format of MNIST and Fashion-MNIST), gzip-compressed or not.

An IDX file is a 4-byte magic number -- two zero bytes, a type code (0x08 = unsigned byte) and the
number of dimensions -- then one big-endian uint32 per dimension, then the values in C order.

Files come from disks and networks we do not control, so every claim of the header is checked
against the bytes that actually follow, and a header that asks for an absurd amount of memory is
refused before anything of that size is allocated: decompression is bounded by what the header
(already checked) promises, so a tiny malicious file cannot make us inflate gigabytes.
"""
from __future__ import annotations

import hashlib
import math
import os
import zlib
from typing import NamedTuple

import numpy as np

__all__ = ["DataFileError", "IDXArray", "read_idx", "parse_idx_header", "MAX_ELEMENTS"]

#: Headers describing more values than this are refused before allocating (2**31 bytes is already
#: 45 times the largest Fashion-MNIST file, and past what int32 sizes in the kernels can index).
MAX_ELEMENTS = 2**31
#: NumPy's limit on dimensions (an IDX header's rank byte allows 255).
MAX_NDIM = 32

_GZIP_MAGIC = b"\x1f\x8b"
_UINT8 = 0x08
_TYPE_NAMES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "int16", 0x0C: "int32",
               0x0D: "float32", 0x0E: "float64"}
# Compressed input is fed to zlib in slices of this size, so that a truncated or corrupt stream
# is noticed without first holding two copies of a large file.
_FEED = 1 << 20


class DataFileError(ValueError):
    """A data file is unusable: not IDX, truncated, corrupt, or not the expected content.

    The message always names the file.  `path` is the file in question, `reason` what is
    wrong with it; `message` replaces the default "path: reason" text (used for the one error
    that sums up a whole failed search)."""

    def __init__(self, path, reason: str, message: str | None = None):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(message if message is not None else f"{self.path}: {reason}")


class IDXArray(NamedTuple):
    """A decoded IDX file: the values (read-only, C-contiguous) and the sha256 of the raw
    (decompressed) file bytes, header included."""

    array: np.ndarray
    sha256: str


def parse_idx_header(path, magic: bytes, dims_bytes: bytes | None = None,
                     expected_ndim: int | None = None):
    """Check the 4-byte magic number (and, when given, the dimension words).

    Returns the number of dimensions when `dims_bytes` is None, else the tuple of dimensions.
    Raises DataFileError for a wrong magic number, an unsupported value type, an unexpected rank
    or a size past MAX_ELEMENTS."""
    if len(magic) < 4:
        raise DataFileError(path, f"too short for an IDX file ({len(magic)} bytes, the magic "
                                  "number alone needs 4)")
    code, ndim = magic[2], magic[3]
    if magic[0] or magic[1] or code not in _TYPE_NAMES or ndim == 0:
        want = ("0x00000803 (images) or 0x00000801 (labels)" if expected_ndim is None
                else f"0x0000080{expected_ndim}")
        raise DataFileError(path, f"not an IDX file: magic number 0x{magic[:4].hex()}, expected "
                                  f"{want}")
    if code != _UINT8:
        raise DataFileError(path, f"IDX values of type {_TYPE_NAMES[code]} (code 0x{code:02x}) "
                                  "are not supported, only unsigned bytes (0x08)")
    if expected_ndim is not None and ndim != expected_ndim:
        raise DataFileError(path, f"IDX file with {ndim} dimension(s) (magic number "
                                  f"0x{magic[:4].hex()}), expected {expected_ndim} "
                                  f"(magic 0x0000080{expected_ndim})")
    if ndim > MAX_NDIM:
        raise DataFileError(path, f"IDX header claims {ndim} dimensions, more than the "
                                  f"{MAX_NDIM} an array can have; the file is corrupt or not "
                                  "a dataset file")
    if dims_bytes is None:
        return ndim
    if len(dims_bytes) < 4 * ndim:
        raise DataFileError(path, f"truncated IDX header: {ndim} dimensions need {4 * ndim} "
                                  f"bytes after the magic number, found {len(dims_bytes)}")
    dims = tuple(int.from_bytes(dims_bytes[4 * i:4 * i + 4], "big") for i in range(ndim))
    total = 1
    for d in dims:
        total *= d  # Python ints: no overflow, so the size check below cannot be fooled
    if total > MAX_ELEMENTS:
        raise DataFileError(path, f"IDX header claims dimensions {dims} = {total} values, more "
                                  f"than the {MAX_ELEMENTS} this reader accepts; the file is "
                                  "corrupt or not a dataset file")
    return dims


class _Inflater:
    """Bounded reads from a gzip file (one or more members), never producing more than asked."""

    def __init__(self, fh, path):
        self._fh = fh
        self._path = path
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = b""  # compressed bytes read from the file but not yet given to zlib

    def _more_input(self) -> bool:
        if not self._pending:
            self._pending = self._fh.read(_FEED)
        return bool(self._pending)

    def read(self, n: int) -> bytes:
        """Up to `n` decompressed bytes (fewer only at the end of the stream)."""
        parts, got = [], 0
        try:
            while got < n:
                if self._d.eof:
                    rest = self._d.unused_data + self._pending
                    self._pending = b""
                    if not rest:
                        rest = self._fh.read(_FEED)
                    # gzip allows several members back to back and zero padding after the last.
                    if not rest.strip(b"\0"):
                        if not self._fh.read(1):
                            break
                        raise DataFileError(self._path, "unexpected data after the gzip stream")
                    self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    self._pending = rest
                    continue
                if not self._d.unconsumed_tail and not self._more_input():
                    raise DataFileError(self._path, "truncated gzip file: the compressed stream "
                                                    "ends before its end-of-stream marker")
                data = self._d.unconsumed_tail or self._pending
                if not self._d.unconsumed_tail:
                    self._pending = b""
                chunk = self._d.decompress(data, n - got)
                if chunk:
                    parts.append(chunk)
                    got += len(chunk)
        except zlib.error as exc:
            raise DataFileError(self._path, f"corrupt gzip data ({exc})") from None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def at_end(self) -> bool:
        """True when the stream (and its trailing checksum) is complete with nothing after."""
        return not self.read(1)


class _Plain:
    """The same interface over an uncompressed file."""

    def __init__(self, fh, path):
        self._fh = fh

    def read(self, n: int) -> bytes:
        return self._fh.read(n)

    def at_end(self) -> bool:
        return not self._fh.read(1)


class _Hashing:
    """A file's reads, also fed to a hash."""

    def __init__(self, fh, file_hash):
        self._fh, self._hash = fh, file_hash

    def read(self, n: int) -> bytes:
        data = self._fh.read(n)
        self._hash.update(data)
        return data


def open_for_reading(path: str):
    """`path` opened in binary mode, or a DataFileError naming it."""
    try:
        return open(path, "rb")
    except OSError as exc:
        raise DataFileError(path, f"cannot be read ({exc.strerror or exc})") from None


def read_idx(path, expected_ndim: int | None = None, *, file_hash=None) -> IDXArray:
    """Decode the IDX file at `path` (gzip-compressed or plain, recognised by content).

    Returns the values as a read-only uint8 array of the header's shape and the sha256 of the
    raw IDX bytes, so the caller can check the content without decompressing twice.  Raises
    DataFileError (naming the file) for a bad magic number or type, a rank other than
    `expected_ndim`, an absurd header, a file shorter or longer than its header says, and a
    truncated or corrupt gzip stream (gzip's own CRC is checked too).

    `file_hash` (a hashlib object), when given, is fed every byte read from the file: on success
    the whole file as stored, so the caller can tie the content to these exact file bytes."""
    path = os.fspath(path)
    with open_for_reading(path) as fh:
        compressed = fh.read(2) == _GZIP_MAGIC
        fh.seek(0)
        stream = fh if file_hash is None else _Hashing(fh, file_hash)
        src = _Inflater(stream, path) if compressed else _Plain(stream, path)
        magic = src.read(4)
        ndim = parse_idx_header(path, magic, expected_ndim=expected_ndim)
        dims_bytes = src.read(4 * ndim)
        dims = parse_idx_header(path, magic, dims_bytes, expected_ndim)
        total = math.prod(dims)
        header = magic + dims_bytes
        if not compressed:
            size = os.fstat(fh.fileno()).st_size
            if size != len(header) + total:
                raise DataFileError(path, _size_reason(dims, len(header) + total, size))
        # Only now, with the size known to be sane, read the values; inflation is bounded by it.
        body = src.read(total)
        if len(body) != total:
            raise DataFileError(path, _size_reason(dims, len(header) + total,
                                                   len(header) + len(body)))
        if not src.at_end():
            raise DataFileError(path, f"the IDX header says dimensions {dims} "
                                      f"({len(header) + total} bytes) but the file holds more data")
    digest = hashlib.sha256(header)
    digest.update(body)
    arr = np.frombuffer(body, dtype=np.uint8).reshape(dims)  # bytes-backed: read-only, no copy
    return IDXArray(arr, digest.hexdigest())


def _size_reason(dims, want: int, got: int) -> str:
    return (f"the IDX header says dimensions {dims}, i.e. {want} bytes, but the file's data "
            f"has {got} bytes (truncated or corrupt file)")
