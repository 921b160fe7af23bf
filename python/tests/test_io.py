"""Registered buffers, files, futures and rings on a real mount: every byte compared."""

from __future__ import annotations

import errno
import subprocess
import threading

import numpy as np
import pytest

import stripefs

from conftest import MIB, binary, pattern

SIZES = [1, 4096, 100_000, MIB, MIB + 17, 3 * MIB + 5, 777_777, 5 * MIB - 4096]


@pytest.fixture()
def files(mount):
    """Files of the sizes above, written through the mount."""
    paths = []
    for i, n in enumerate(SIZES):
        p = mount.path / f"io{i}.bin"
        p.write_bytes(pattern(i, n))
        paths.append(p)
    yield paths
    for p in paths:
        p.unlink(missing_ok=True)


def test_one_buffer_reads_many_files_with_no_new_registration(client, files):
    total = sum(SIZES) + len(SIZES) * 8192
    none = stripefs_registrations(client)
    buf = client.alloc(total)
    before = stripefs_registrations(client)
    assert before == none + 1, "the buffer is one registration"
    at = 0
    placed = []
    for i, p in enumerate(files):
        f = client.open(str(p))
        # Odd files at an unaligned buffer offset (bounced), even ones aligned (direct).
        start = at + (512 if i % 2 else 0)
        n = f.read(buf[start:], size=SIZES[i])
        assert n == SIZES[i]
        placed.append(start)
        at = (start + n + 4095) // 4096 * 4096
        f.close()
    assert stripefs_registrations(client) == before
    with memoryview(buf) as view:
        for i, p in enumerate(files):
            got = bytes(view[placed[i] : placed[i] + SIZES[i]])
            assert got == p.read_bytes(), f"file {i}"
    buf.close()


def stripefs_registrations(client) -> int:
    """Registrations of the mount, as `stripefs stat` counts them."""
    out = subprocess.run(
        [str(binary()), "stat", str(client.mount)], capture_output=True, text=True, check=True
    ).stdout
    counts = [int(l.split(":")[1]) for l in out.splitlines() if l.startswith("registrations:")]
    assert len(counts) == 1, out
    return counts[0]


def test_read_pread_future_and_numpy_zero_copy(client, files):
    p = files[5]
    want = p.read_bytes()
    buf = client.alloc(len(want))
    f = client.open(str(p))
    half = len(want) // 2 // 4096 * 4096
    n = f.read(buf, size=half, file_offset=0)
    assert n == half
    fut = f.pread(buf[n:], file_offset=n)
    assert fut.get() == len(want) - n
    assert fut.done()
    x = np.frombuffer(buf, np.uint8, count=len(want))
    assert x.tobytes() == want
    # Short at the end of the file; past the end reads nothing.
    assert f.read(buf, file_offset=len(want) - 10) == 10
    assert f.read(buf, file_offset=len(want) + 4096) == 0
    with pytest.raises(BufferError):
        buf.close()  # x is a live view
    del x
    buf.close()
    with pytest.raises(ValueError):
        f.read(buf)
    f.close()


def huge_pages_free() -> int:
    """Huge pages of 2 MiB free in the system's reserve (/proc/sys/vm/nr_hugepages)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("HugePages_Free:"):
                return int(line.split()[1])
    return 0


def test_alloc_with_huge_pages(client, files):
    """`alloc(huge_pages=True)` reads like any buffer where huge pages are reserved, and
    says so with ENOMEM where they are not (most machines: none are reserved by default)."""
    p = files[5]
    want = p.read_bytes()
    if huge_pages_free() < 2:
        with pytest.raises(stripefs.StripefsError) as e:
            client.alloc(len(want), huge_pages=True)
        assert e.value.errno == errno.ENOMEM
        assert "nr_hugepages" in str(e.value)
        return
    buf = client.alloc(len(want), huge_pages=True)
    assert len(buf) == (len(want) + 4095) // 4096 * 4096
    with client.open(str(p)) as f:
        assert f.read(buf) == len(want)
    x = np.frombuffer(buf, np.uint8, count=len(want))
    assert x.tobytes() == want
    del x
    buf.close()


def test_slices_memoryview_and_close_with_live_views(client):
    buf = client.alloc(3 * 4096)
    assert len(buf) == 3 * 4096
    s = buf[4096:8192]
    assert (len(s), s.offset) == (4096, 4096)
    with memoryview(s) as m:
        m[:5] = b"hello"
        with pytest.raises(BufferError):
            buf.close()
    with memoryview(buf) as whole:
        assert bytes(whole[4096:4101]) == b"hello"
    assert buf[4096] == ord("h")
    with pytest.raises(ValueError):
        buf[::2]
    with pytest.raises(IndexError):
        buf[3 * 4096]
    buf.close()
    assert buf.closed and s.closed
    with pytest.raises(BufferError):
        memoryview(s)


def test_write_then_read_back(client, mount):
    p = mount.path / "written.bin"
    p.write_bytes(b"")
    want = pattern(77, 2 * MIB + 333)
    buf = client.alloc(len(want))
    with memoryview(buf) as m:
        m[: len(want)] = want
    with client.open(str(p), "r+") as f:
        assert f.write(buf, size=len(want)) == len(want)
        assert f.pwrite(buf[:4096], file_offset=len(want)).get() == 4096
    assert p.read_bytes() == want + want[:4096]
    with client.open(str(p), "r") as f:
        with pytest.raises(stripefs.StripefsError) as e:
            f.write(buf, size=4096)
    assert e.value.errno == errno.EBADF
    assert e.value.filename == str(p)
    assert e.value.mount == str(client.mount)
    assert e.value.device is None
    p.unlink()


def test_errors_carry_errno_and_path(client, mount):
    with pytest.raises(stripefs.StripefsError) as e:
        client.open(str(mount.path / "missing"))
    assert e.value.errno == errno.ENOENT
    assert e.value.filename == str(mount.path / "missing")
    with pytest.raises(stripefs.StripefsError) as e:
        client.open(str(mount.path))
    assert e.value.errno == errno.EISDIR
    assert isinstance(e.value, OSError)
    with pytest.raises(stripefs.StripefsError) as e:
        stripefs.Client("/proc")
    assert e.value.errno == errno.ENOENT


def test_ring_many_in_flight_with_userdata(client, files):
    chunk = 64 * 1024
    p = files[7]
    want = p.read_bytes()
    buf = client.alloc(len(want) + chunk)
    f = client.open(str(p))
    ring = client.ring(16)
    offsets = list(range(0, len(want), chunk))
    results = {}
    pending = list(offsets)
    while pending or ring.in_flight:
        while pending and ring.prepared + ring.in_flight < ring.entries:
            off = pending.pop()
            ring.prepare(f, buf[off : off + chunk], file_offset=off, userdata=off)
        for userdata, result in ring.submit().wait(min_results=1):
            results[userdata] = result
    assert sorted(results) == offsets
    for off, n in results.items():
        assert n == min(chunk, len(want) - off)
    with memoryview(buf) as m:
        assert bytes(m[: len(want)]) == want
    with pytest.raises(RuntimeError):
        for off in range(17):
            ring.prepare(f, buf[:4096], file_offset=0)


def test_rings_of_threads_share_one_client(client, files):
    p = files[6]
    want = p.read_bytes()
    bufs = [client.alloc(len(want)) for _ in range(4)]
    f = client.open(str(p))
    errors = []

    def work(buf):
        try:
            ring = client.ring(8)
            for _ in range(20):
                for i in range(4):
                    a = i * len(want) // 4 // 4096 * 4096
                    b = len(want) if i == 3 else (i + 1) * len(want) // 4 // 4096 * 4096
                    ring.prepare(f, buf[a:b], file_offset=a, userdata=i)
                got = []
                ring.submit()
                while ring.in_flight:
                    got += ring.wait(1)
                assert sorted(u for u, _ in got) == [0, 1, 2, 3]
                with memoryview(buf) as m:
                    assert bytes(m[: len(want)]) == want
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(b,)) for b in bufs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_read_many_and_as_completed(client, files):
    handles = [client.open(str(p)) for p in files]
    requests = [(h, 0, n) for h, n in zip(handles, SIZES)]
    requests += [(handles[5], 12345, 100_000), (handles[3], MIB - 10, 4096)]
    views = stripefs.read_many(client, requests)
    for (h, off, n), view in zip(requests, views):
        want = h.path.read_bytes()[off : off + n]
        with memoryview(view) as m:
            assert bytes(m) == want
    seen = sorted(i for i, _ in stripefs.as_completed(client, requests))
    assert seen == list(range(len(requests)))


def test_a_buffer_with_requests_in_flight_does_not_close(client, files):
    p = files[5]
    buf = client.alloc(SIZES[5])
    f = client.open(str(p))
    fut = f.pread(buf)
    with pytest.raises(BufferError):
        buf.close()  # the future has not been waited for
    assert fut.get() == SIZES[5]
    assert not buf.busy
    buf.close()
    f.close()
    with pytest.raises(ValueError):
        f.read(buf)


def test_ring_writes(client, mount):
    p = mount.path / "ring-written.bin"
    p.write_bytes(b"")
    want = pattern(5, 1 << 20)
    buf = client.alloc(len(want))
    with memoryview(buf) as m:
        m[:] = want
    with client.open(str(p), "w") as f:
        ring = client.ring(8)
        for k in range(8):
            piece = len(want) // 8
            ring.prepare(f, buf[k * piece : (k + 1) * piece], file_offset=k * piece, userdata=k, write=True)
        got = []
        ring.submit()
        while ring.in_flight:
            got += ring.wait(1)
    assert sorted(got) == [(k, len(want) // 8) for k in range(8)]
    assert p.read_bytes() == want
    p.unlink()


def test_a_buffer_of_another_client_is_refused(client, mount, files):
    with stripefs.Client(str(mount.path)) as other:
        theirs = other.alloc(4096)
        f = client.open(str(files[1]))
        with pytest.raises(ValueError):
            f.read(theirs)
        with pytest.raises(ValueError):
            client.ring(4).prepare(f, theirs)
        f.close()
        theirs.close()
