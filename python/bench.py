#!/usr/bin/env python3
"""The loading benchmark, run by `stripefs bench --loaders` (or by hand, as root, with
`--stripefs-bin`): on a scratch stripefs mount (four image files, `stripefs mount --daemon`),

- a 1 GiB file read whole by the Python package (`File.read`) and by the Rust client
  (`stripefs bench --rust-load`, another process, the same request size and depth), both the
  same way: each run connects, registers a new buffer, reads the file once untimed, then
  times one read; and by `numpy.fromfile` through the mount;
- a multi-tensor safetensors file loaded by `stripefs.load_safetensors` (steady state: the
  client's pooled buffer, as a loader of many files runs; and a first load, with a new
  buffer registered each time), by `safetensors.numpy.load_file` through the mount, and read
  whole by the Rust client.

Each engine runs `--repeat` times, in alternating order; the figures are medians. Every run
is cold without dropping caches: the mount serves files with direct I/O (no page cache) and
the daemon reads its devices with O_DIRECT. Ratios compare engines of this run only. Needs root, FUSE, and
`pip install ./python numpy safetensors`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import stripefs
from stripefs.testing import MIB, Mount, missing

GIB = 1 << 30


def write_big(client: stripefs.Client, path: Path, size: int) -> None:
    """A file of `size` bytes of a pattern, written through the client."""
    path.touch()
    buf = client.alloc(size)
    words = np.frombuffer(buf, np.uint64, count=size // 8)
    words[:] = np.arange(size // 8, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    del words
    with client.open(str(path), "r+") as f:
        assert f.write(buf, size=size) == size
    buf.close()


def write_safetensors(path: Path, size: int) -> int:
    """A safetensors file of about `size` bytes: 64 tensors of float32, float16 and int64,
    of several shapes; returns its size."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(1)
    per = size // 64
    tensors = {}
    for i in range(64):
        kind = (np.float32, np.float16, np.int64)[i % 3]
        n = per // np.dtype(kind).itemsize - 17 * i
        cols = 1024 + i
        data = rng.integers(-1000, 1000, size=n // cols * cols).astype(kind)
        tensors[f"layers.{i}.weight"] = data.reshape(-1, cols)
        tensors[f"layers.{i}.bias"] = rng.standard_normal(cols).astype(np.float32)
    save_file(tensors, str(path), metadata={"bench": "stripefs"})
    return path.stat().st_size


class Engines:
    """Each engine: a name and a function that loads and returns the bytes it loaded."""

    def __init__(self, exe: str, client: stripefs.Client, big: Path, st: Path):
        self.exe, self.client, self.big, self.st = exe, client, big, st
        self.buf = client.alloc(max(big.stat().st_size, st.stat().st_size))

    def python_read(self) -> tuple[int, float]:
        """What each run of the Rust client (`rust_load` in bench/src/loaders.rs) does: a
        connection, a new buffer registered, one untimed pass, then the timed read. How fast
        a read is depends on the buffer's pages (how physically contiguous they are, which is
        up to the kernel when it is allocated): each side gets a new buffer per run, so
        neither keeps a lucky or an unlucky one for the whole benchmark."""
        size = self.big.stat().st_size
        with stripefs.Client(str(self.big.parent)) as client:
            buf = client.alloc(size)
            with client.open(str(self.big)) as f:
                f.read(buf)
            started = time.perf_counter()
            with client.open(str(self.big)) as f:
                n = f.read(buf)
            seconds = time.perf_counter() - started
            buf.close()
        return n, seconds

    def rust(self, path: Path) -> tuple[int, float]:
        out = subprocess.run(
            [self.exe, "bench", "--rust-load", str(path)], capture_output=True, text=True, check=True
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        return r["bytes"], r["seconds"]

    def numpy_fromfile(self) -> int:
        return np.fromfile(self.big, dtype=np.uint8).nbytes

    def load_safetensors(self) -> int:
        return sum(a.nbytes for a in stripefs.load_safetensors(self.client, str(self.st)).values())

    def load_safetensors_new_buffer(self) -> int:
        got = stripefs.load_safetensors(self.client, str(self.st), pool=False)
        return sum(a.nbytes for a in got.values())

    def reference_load_file(self) -> int:
        from safetensors.numpy import load_file

        return sum(a.nbytes for a in load_file(str(self.st)).values())

    def all(self) -> dict:
        """name -> () -> (bytes, seconds)."""

        def timed(f):
            def run():
                t = time.perf_counter()
                n = f()
                return n, time.perf_counter() - t

            return run

        return {
            "python File.read (large file)": self.python_read,
            "Rust client (large file)": lambda: self.rust(self.big),
            "numpy.fromfile through the mount": timed(self.numpy_fromfile),
            "stripefs.load_safetensors (pooled buffer)": timed(self.load_safetensors),
            "stripefs.load_safetensors (new buffer)": timed(self.load_safetensors_new_buffer),
            "safetensors.numpy.load_file through the mount": timed(self.reference_load_file),
            "Rust client (safetensors file)": lambda: self.rust(self.st),
        }


def check(engines: Engines) -> None:
    """The engines load the same bytes (once, before timing)."""
    from safetensors.numpy import load_file

    with engines.client.open(str(engines.big)) as f:
        n = f.read(engines.buf)
    want = np.fromfile(engines.big, dtype=np.uint8)
    assert n == want.nbytes and np.array_equal(np.frombuffer(engines.buf, np.uint8, count=n), want)
    ref = load_file(str(engines.st))
    got = stripefs.load_safetensors(engines.client, str(engines.st))  # fills the pool too
    assert sorted(ref) == sorted(got) and all(np.array_equal(got[k], ref[k]) for k in ref)
    del got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stripefs-bin", required=True)
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--quick", action="store_true", help="64 MiB files, one run each")
    ap.add_argument("--repeat", type=int)
    ap.add_argument("--size", type=int, help="bytes of the large file [1 GiB, 64 MiB with --quick]")
    ap.add_argument("--markdown")
    ap.add_argument("--json")
    args = ap.parse_args()
    reason = missing(Path(args.stripefs_bin))
    if reason:
        if os.environ.get("STRIPEFS_REQUIRE_FUSE") == "1":
            print(f"STRIPEFS_REQUIRE_FUSE is set, but {reason}")
            return 1
        print(f"loading benchmark skipped: {reason}")
        return 0
    size = args.size or (64 * MIB if args.quick else GIB)
    repeat = args.repeat or (1 if args.quick else 5)
    st_size = size // 2
    device = ((size + st_size) * 13 // 10 // 4 + 64 * MIB) // MIB * MIB
    with Mount(Path(args.stripefs_bin), devices=4, size=device, dir=args.dir) as m:
        big, st = m.path / "big.bin", m.path / "model.safetensors"
        with stripefs.Client(str(m.path)) as writer:
            write_big(writer, big, size)
        write_safetensors(st, st_size)
        # A client of its own for the reads, as the Rust client's process has.
        with stripefs.Client(str(m.path)) as client:
            engines = Engines(args.stripefs_bin, client, big, st)
            check(engines)
            runs = engines.all()
            seconds = {name: [] for name in runs}
            loaded = {}
            for r in range(repeat):
                order = list(runs) if r % 2 == 0 else list(reversed(runs))
                for name in order:
                    n, s = runs[name]()
                    loaded[name] = n
                    seconds[name].append(s)
            engines.buf.close()
            del engines
    return report(seconds, loaded, size, repeat, args)


def report(seconds: dict, loaded: dict, size: int, repeat: int, args) -> int:
    med = {k: statistics.median(v) for k, v in seconds.items()}
    rate = {k: loaded[k] / med[k] / 1e9 for k in med}
    lines = [
        f"Loading benchmark: {size / MIB:.0f} MiB file and a {loaded['Rust client (safetensors file)'] / MIB:.0f} MiB "
        f"safetensors file on 4 image-file devices; median of {repeat} run(s)",
        "",
        "| engine | seconds (median) | fastest – slowest run | GB/s (median) |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {k} | {med[k]:.3f} | {min(seconds[k]):.3f} – {max(seconds[k]):.3f} | {rate[k]:.2f} |"
        for k in med
    ]
    def ratio(a: str, b: str) -> float:
        return rate[a] / rate[b]

    big, rust_big = "python File.read (large file)", "Rust client (large file)"
    pooled, new = "stripefs.load_safetensors (pooled buffer)", "stripefs.load_safetensors (new buffer)"
    ref, rust_st = "safetensors.numpy.load_file through the mount", "Rust client (safetensors file)"
    ratios = {
        "python File.read / Rust client (large file)": ratio(big, rust_big),
        "python File.read / numpy.fromfile": ratio(big, "numpy.fromfile through the mount"),
        "load_safetensors (pooled) / safetensors.numpy.load_file": ratio(pooled, ref),
        "load_safetensors (new buffer) / safetensors.numpy.load_file": ratio(new, ref),
        "load_safetensors (pooled) / Rust client (same file)": ratio(pooled, rust_st),
    }
    lines += ["", "| ratio (speed) | value | goal |", "| --- | ---: | --- |"]
    goals = {
        "python File.read / Rust client (large file)": ">= 0.9",
        "load_safetensors (pooled) / safetensors.numpy.load_file": ">= 2",
    }
    lines += [f"| {k} | {v:.2f}x | {goals.get(k, '')} |" for k, v in ratios.items()]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "a") as f:
            f.write("\n" + text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"seconds": seconds, "bytes": loaded, "ratios": ratios}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
