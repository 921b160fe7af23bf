"""Format-aware loading on top of the native client: safetensors files read with one batch
of registered reads into one registered buffer, and lists of (file, offset, length) read
with many requests in flight."""

from __future__ import annotations

import json
import os
import struct
import weakref
from typing import Iterable, Iterator, Sequence

import numpy as np

from ._native import Buffer, Client, File, StripefsError

#: Attribute of every file on a mount that gives its layout.
LAYOUT_XATTR = "user.stripefs.layout"
#: Block size of the devices: reads whose file and buffer offsets agree modulo it go
#: straight from the devices into the buffer.
BLOCK = 4096
#: Smallest read a coalesced batch issues (when the stripe is narrower).
MIN_READ = 4 << 20

#: The buffer `load_safetensors` last allocated on each client, reused by the next load once
#: no array of it is alive (registering a buffer pins it on every device: worth keeping).
_POOLS: "weakref.WeakKeyDictionary[Client, Buffer]" = weakref.WeakKeyDictionary()

_DTYPES = {
    "BOOL": np.bool_,
    "U8": np.uint8,
    "I8": np.int8,
    "U16": np.uint16,
    "I16": np.int16,
    "U32": np.uint32,
    "I32": np.int32,
    "U64": np.uint64,
    "I64": np.int64,
    "F16": np.float16,
    "F32": np.float32,
    "F64": np.float64,
}


def layout_of(path: str | os.PathLike) -> tuple[int, int]:
    """(stripe unit, stripe count) of a file on a stripefs mount, from its layout attribute."""
    value = os.getxattr(path, LAYOUT_XATTR).decode()
    fields = dict(part.split("=", 1) for part in value.split(" ")[0].split(","))
    return int(fields["stripe_unit"]), int(fields["stripe_count"])


def _pieces(start: int, end: int, step: int) -> Iterator[tuple[int, int]]:
    """`start..end` cut at multiples of `step`."""
    at = start
    while at < end:
        nxt = min((at // step + 1) * step, end)
        yield at, nxt
        at = nxt


def _read_ranges(client: Client, file: File, buf: Buffer, ranges, step: int, depth: int) -> None:
    """Reads each (file_offset, buffer_offset, length) of `ranges`, cut at multiples of
    `step` in the file, with up to `depth` requests in flight; raises the first error."""
    ring = client.ring(depth)
    failures = []
    for file_offset, buffer_offset, length in ranges:
        for a, b in _pieces(file_offset, file_offset + length, step):
            if ring.prepared + ring.in_flight >= depth:
                if ring.prepared:
                    ring.submit()
                failures += [r for _, r in ring.wait(1) if isinstance(r, BaseException)]
            at = buffer_offset + (a - file_offset)
            ring.prepare(file, buf[at : at + (b - a)], file_offset=a, userdata=a)
    ring.submit()
    while ring.in_flight:
        failures += [r for _, r in ring.wait(ring.in_flight) if isinstance(r, BaseException)]
    if failures:
        raise failures[0]


def _coalesce(spans: Iterable[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    """Merges sorted (start, end) spans closer than `gap`."""
    out: list[list[int]] = []
    for a, b in sorted(spans):
        if out and a - out[-1][1] <= gap:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _error(errno: int, what: str, path: str, mount=None) -> StripefsError:
    """A StripefsError like those of the native module (errno, message, path, mount,
    device)."""
    err = StripefsError(errno, what, path)
    err.mount = None if mount is None else str(mount)
    err.device = None
    return err


def _header(path: str, size: int, mount) -> bytes:
    """The JSON header of a safetensors file of `size` bytes (two small reads)."""
    if size < 8:
        raise _error(22, f"{size} bytes is too short for a safetensors file", path, mount)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        (n,) = struct.unpack("<Q", os.pread(fd, 8, 0))
        if 8 + n > size:
            raise _error(22, f"header of {n} bytes does not fit in {size}", path, mount)
        header = os.pread(fd, n, 8)
    finally:
        os.close(fd)
    if len(header) != n:
        raise _error(5, f"header: read {len(header)} of {n} bytes", path, mount)
    return header


def _pooled(client: Client, size: int) -> Buffer:
    """The client's pooled buffer if it is free and large enough, else a new one (pooled)."""
    buf = _POOLS.get(client)
    if buf is not None and not buf.closed and not buf.busy and buf.nbytes >= size:
        return buf
    buf = client.alloc(max(size, 1))
    _POOLS[client] = buf
    return buf


def load_safetensors(
    client: Client,
    path: str | os.PathLike,
    *,
    buffer: Buffer | None = None,
    pool: bool = True,
    depth: int | None = None,
) -> dict:
    """Loads every tensor of the safetensors file at `path` (on `client`'s mount) into one
    registered buffer and returns {name: numpy array}, each array a view into that buffer
    (equal, tensor by tensor, to ``safetensors.numpy.load_file``).

    The header is read first; then the tensors' bytes, coalesced into spans (neighbouring
    tensors merged) and cut along the file's stripe (whole stripe units), go in one batch of
    registered reads, up to `depth` in flight (default: the client's ring size). The buffer
    places file offset x at buffer offset x, so every aligned read goes from the devices
    straight into it. It is `buffer` if given (at least as large as the file); else, with
    `pool`, the one the previous load on this client allocated, once none of its arrays is
    alive and if it is large enough (the client keeps that one buffer until it goes);
    else a new one."""
    path = os.fspath(path)
    with client.open(path) as f:
        size = f.size
        header_bytes = _header(path, size, client.mount)
        header = json.loads(header_bytes)
        header.pop("__metadata__", None)
        base = 8 + len(header_bytes)
        spans = []
        for name, info in header.items():
            begin, end = info["data_offsets"]
            if not 0 <= begin <= end <= size - base:
                raise _error(22, f"tensor {name!r} lies outside the file", path, client.mount)
            if info["dtype"] not in _DTYPES:
                what = f"tensor {name!r}: dtype {info['dtype']} has no numpy type"
                raise _error(95, what, path, client.mount)
            items = int(np.prod(info["shape"], dtype=np.int64))
            if items * np.dtype(_DTYPES[info["dtype"]]).itemsize != end - begin:
                what = f"tensor {name!r}: shape {info['shape']} does not fill {end - begin} bytes"
                raise _error(22, what, path, client.mount)
            spans.append((base + begin, base + end))
        if buffer is None:
            buf = _pooled(client, size) if pool else client.alloc(max(size, 1))
        elif buffer.nbytes < size:
            raise ValueError(f"buffer of {buffer.nbytes} bytes, the file has {size}")
        else:
            buf = buffer
        try:
            unit, count = layout_of(path)
        except OSError:
            unit, count = 1 << 20, 1
        step = max(unit * count, (MIN_READ // (unit * count) or 1) * unit * count)
        # Whole blocks (the buffer holds file offset x at x, so the extra bytes are harmless):
        # every request is then aligned, and the daemon's ring thread runs it directly.
        blocks = ((a // BLOCK * BLOCK, -(-b // BLOCK) * BLOCK) for a, b in spans if b > a)
        # Past the end of the file a read is short; the buffer bounds the request.
        ranges = [(a, a, min(b, buf.nbytes) - a) for a, b in _coalesce(blocks, unit)]
        _read_ranges(client, f, buf, ranges, step, depth or client.entries)
    out = {}
    for name, info in header.items():
        begin, _ = info["data_offsets"]
        shape = tuple(info["shape"])
        items = int(np.prod(shape, dtype=np.int64))
        arr = np.frombuffer(buf, dtype=_DTYPES[info["dtype"]], count=items, offset=base + begin)
        out[name] = arr.reshape(shape)
    return out


def _placements(requests: Sequence[tuple[File, int, int]]) -> tuple[list[int], int]:
    """Buffer offsets for each (file, offset, length): congruent to the file offset modulo
    the block, so aligned reads go straight to the buffer; and the buffer size needed."""
    starts, at = [], 0
    for _, offset, length in requests:
        start = at + ((offset - at) % BLOCK)
        starts.append(start)
        at = start + length
    return starts, at


def as_completed(
    client: Client,
    requests: Sequence[tuple[File, int, int]],
    buffer: Buffer | None = None,
    *,
    depth: int | None = None,
) -> Iterator[tuple[int, Buffer]]:
    """Reads every (file, file_offset, length) of `requests` into one registered buffer (a
    new one unless given), up to `depth` in flight, and yields (index, view) as each
    completes; a view is a Buffer slice holding exactly the bytes read (short at the end of
    a file). Raises the first error."""
    starts, need = _placements(requests)
    if buffer is None:
        buffer = client.alloc(max(need, 1))
    elif buffer.nbytes < need:
        raise ValueError(f"buffer of {buffer.nbytes} bytes, {need} needed")
    depth = depth or client.entries
    ring = client.ring(depth)
    pending = iter(enumerate(requests))
    exhausted = False
    while True:
        while not exhausted and ring.prepared + ring.in_flight < depth:
            item = next(pending, None)
            if item is None:
                exhausted = True
                break
            i, (file, offset, length) = item
            ring.prepare(file, buffer[starts[i] : starts[i] + length], file_offset=offset, userdata=i)
        if ring.prepared:
            ring.submit()
        if not ring.in_flight:
            return
        for i, result in ring.wait(1):
            if isinstance(result, BaseException):
                raise result
            yield i, buffer[starts[i] : starts[i] + result]


def read_many(
    client: Client,
    requests: Sequence[tuple[File, int, int]],
    buffer: Buffer | None = None,
    *,
    depth: int | None = None,
) -> list[Buffer]:
    """Reads every (file, file_offset, length) of `requests` into one registered buffer (a
    new one unless given), many in flight; returns the views in the order asked."""
    out: list[Buffer | None] = [None] * len(requests)
    for i, view in as_completed(client, requests, buffer, depth=depth):
        out[i] = view
    return out  # type: ignore[return-value]
