"""A real stripefs mount for the tests: image files made into a filesystem with `stripefs
mkfs` and mounted with `stripefs mount --daemon`, as the Rust mount tests do; unmounted and
checked with `stripefs fsck` at the end.

Without root, /dev/fuse or the stripefs binary, the tests are skipped with the reason;
where STRIPEFS_REQUIRE_FUSE=1 (or STRIPEFS_REQUIRE_ROOT=1) is set, as in CI, they fail
instead. The binary is $STRIPEFS_BIN, else target/{release,debug}/stripefs under
$CARGO_TARGET_DIR or the repository.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20


def _binary() -> Path | None:
    if os.environ.get("STRIPEFS_BIN"):
        return Path(os.environ["STRIPEFS_BIN"])
    roots = [Path(os.environ["CARGO_TARGET_DIR"])] if os.environ.get("CARGO_TARGET_DIR") else []
    roots.append(REPO / "target")
    for root in roots:
        for profile in ("release", "debug"):
            exe = root / profile / "stripefs"
            if exe.exists():
                return exe
    return None


def _missing() -> str | None:
    if os.geteuid() != 0:
        return f"not root (euid {os.geteuid()})"
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse (fuse module not loaded)"
    if _binary() is None:
        return "no stripefs binary (set STRIPEFS_BIN or build it: cargo build --release)"
    return None


def _required() -> bool:
    return any(os.environ.get(v) == "1" for v in ("STRIPEFS_REQUIRE_FUSE", "STRIPEFS_REQUIRE_ROOT"))


def _run(*args: str) -> str:
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out.stdout


def _is_mounted(path: Path) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == str(path) for line in f)


class Mount:
    """A mounted stripefs: `path` is the mountpoint."""

    def __init__(self, devices: int = 4, size: int = 512 * MIB, unit: str = "256K"):
        self.exe = str(_binary())
        self.dir = Path(tempfile.mkdtemp(prefix="stripefs-pytest-", dir="/var/tmp"))
        self.images = []
        for i in range(devices):
            image = self.dir / f"dev{i}.img"
            with open(image, "wb") as f:
                f.truncate(size)
            self.images.append(str(image))
        _run(self.exe, "mkfs", "--stripe-unit", unit, *self.images)
        self.path = self.dir / "mnt"
        self.path.mkdir()
        self.log = self.dir / "mnt.log"
        out = _run(self.exe, "mount", "--daemon", "--log", str(self.log), *self.images, str(self.path))
        found = re.search(r"daemon pid (\d+)", out)
        self.pid = int(found.group(1)) if found else None
        if not _is_mounted(self.path):
            raise RuntimeError(f"`stripefs mount --daemon` returned but {self.path} is not mounted")

    def close(self) -> None:
        """Unmounts, waits for the daemon, checks the filesystem, removes the scratch files."""
        import gc

        gc.collect()  # objects of a failed test may still hold files open
        try:
            if _is_mounted(self.path):
                subprocess.run(["umount", str(self.path)], capture_output=True)
            deadline = time.monotonic() + 30
            while self.pid and Path(f"/proc/{self.pid}").exists() and time.monotonic() < deadline:
                if Path(f"/proc/{self.pid}/status").read_text().find("State:\tZ") >= 0:
                    break
                time.sleep(0.05)
            if _is_mounted(self.path):
                subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
                raise RuntimeError(f"{self.path} still mounted; log:\n{self.log.read_text()}")
            _run(self.exe, "fsck", *self.images)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def mount():
    reason = _missing()
    if reason is not None:
        if _required():
            pytest.fail(f"STRIPEFS_REQUIRE_FUSE is set, but {reason}")
        pytest.skip(reason)
    m = Mount()
    try:
        yield m
    finally:
        m.close()


@pytest.fixture()
def client(mount):
    import stripefs

    with stripefs.Client(str(mount.path)) as c:
        yield c


def pattern(seed: int, n: int) -> bytes:
    """`n` bytes of a deterministic pattern."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
