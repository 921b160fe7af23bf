"""Scratch stripefs mounts for tests and benchmarks: image files made into a filesystem with
`stripefs mkfs` and mounted with `stripefs mount --daemon` (root and /dev/fuse needed);
`close()` unmounts, waits for the daemon, checks the filesystem with `stripefs fsck` and
removes the scratch files."""

from __future__ import annotations

import gc
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

MIB = 1 << 20


def find_binary(repo: Path | None = None) -> Path | None:
    """The stripefs binary: $STRIPEFS_BIN, else target/{release,debug}/stripefs under
    $CARGO_TARGET_DIR or `repo`."""
    if os.environ.get("STRIPEFS_BIN"):
        return Path(os.environ["STRIPEFS_BIN"])
    roots = [Path(os.environ["CARGO_TARGET_DIR"])] if os.environ.get("CARGO_TARGET_DIR") else []
    if repo is not None:
        roots.append(repo / "target")
    for root in roots:
        for profile in ("release", "debug"):
            exe = root / profile / "stripefs"
            if exe.exists():
                return exe
    return None


def missing(binary: Path | None) -> str | None:
    """Why a scratch mount cannot be made here, if it cannot."""
    if os.geteuid() != 0:
        return f"not root (euid {os.geteuid()})"
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse (fuse module not loaded)"
    if binary is None:
        return "no stripefs binary (set STRIPEFS_BIN or build it: cargo build --release)"
    return None


def run(*args: str) -> str:
    """Runs a command; its standard output, or RuntimeError with everything it printed."""
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out.stdout


def is_mounted(path: Path) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == str(path) for line in f)


class Mount:
    """A mounted stripefs on `devices` sparse image files of `size` bytes; `path` is the
    mountpoint."""

    def __init__(
        self,
        binary: Path,
        devices: int = 4,
        size: int = 512 * MIB,
        unit: str = "256K",
        dir: str = "/var/tmp",
    ):
        self.exe = str(binary)
        self.dir = Path(tempfile.mkdtemp(prefix="stripefs-py-", dir=dir))
        try:
            self.images = []
            for i in range(devices):
                image = self.dir / f"dev{i}.img"
                with open(image, "wb") as f:
                    f.truncate(size)
                self.images.append(str(image))
            run(self.exe, "mkfs", "--stripe-unit", unit, *self.images)
            self.path = self.dir / "mnt"
            self.path.mkdir()
            self.log = self.dir / "mnt.log"
            out = run(self.exe, "mount", "--daemon", "--log", str(self.log), *self.images, str(self.path))
            found = re.search(r"daemon pid (\d+)", out)
            self.pid = int(found.group(1)) if found else None
            if not is_mounted(self.path):
                raise RuntimeError(f"`stripefs mount --daemon` returned but {self.path} is not mounted")
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def _daemon_gone(self) -> bool:
        try:
            return "State:\tZ" in Path(f"/proc/{self.pid}/status").read_text()
        except FileNotFoundError:
            return True

    def close(self) -> None:
        """Unmounts, waits for the daemon, checks the filesystem, removes the scratch files."""
        gc.collect()  # objects of a failed test may still hold files open
        try:
            if is_mounted(self.path):
                subprocess.run(["umount", str(self.path)], capture_output=True)
            deadline = time.monotonic() + 30
            while self.pid and not self._daemon_gone() and time.monotonic() < deadline:
                time.sleep(0.05)
            if is_mounted(self.path):
                subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
                raise RuntimeError(f"{self.path} was still mounted; log:\n{self.log.read_text()}")
            run(self.exe, "fsck", *self.images)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Mount":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
