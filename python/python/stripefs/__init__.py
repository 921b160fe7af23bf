"""Registered-buffer I/O on a stripefs mount, from Python.

    import stripefs, numpy as np
    with stripefs.Client("/mnt/s") as c:
        buf = c.alloc(1 << 30)                        # registered once against the mount
        f = c.open("/mnt/s/shard0.bin")               # opened once
        n = f.read(buf, size=None, file_offset=0)     # blocking, GIL released
        fut = f.pread(buf[n:], file_offset=n)         # Future: .get(), .done()
        x = np.frombuffer(buf, np.float32, count=n // 4)   # zero copy
        ring = c.ring(256)                            # many in flight, one per thread
        ring.prepare(f, buf[:1 << 22], file_offset=0, userdata=7)
        ring.submit().wait(min_results=1)

One buffer serves every file of the mount with no registration per file. Errors are
``StripefsError`` (an ``OSError``: ``errno``, ``strerror``, ``filename``, ``mount``,
``device``). ``load_safetensors``, ``read_many`` and ``as_completed`` build on these.
"""

from ._native import Buffer, Client, File, Future, Ring, StripefsError
from ._loaders import as_completed, layout_of, load_safetensors, read_many

__all__ = [
    "Buffer",
    "Client",
    "File",
    "Future",
    "Ring",
    "StripefsError",
    "as_completed",
    "layout_of",
    "load_safetensors",
    "read_many",
]
