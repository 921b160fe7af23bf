"""A real stripefs mount for the tests (`stripefs.testing.Mount`: image files made into a
filesystem with `stripefs mkfs`, mounted with `stripefs mount --daemon`, as the Rust mount
tests do; unmounted and checked with `stripefs fsck` at the end).

Without root, /dev/fuse or the stripefs binary, the tests are skipped with the reason;
where STRIPEFS_REQUIRE_FUSE=1 (or STRIPEFS_REQUIRE_ROOT=1) is set, as in CI, they fail
instead. The binary is $STRIPEFS_BIN, else target/{release,debug}/stripefs under
$CARGO_TARGET_DIR or the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from stripefs.testing import MIB, Mount, find_binary, missing

REPO = Path(__file__).resolve().parents[2]

__all__ = ["MIB", "binary", "pattern"]


def binary() -> Path | None:
    return find_binary(REPO)


def _required() -> bool:
    switches = ("STRIPEFS_REQUIRE_FUSE", "STRIPEFS_REQUIRE_ROOT")
    return any(os.environ.get(v) == "1" for v in switches)


@pytest.fixture(scope="session")
def mount():
    reason = missing(binary())
    if reason is not None:
        if _required():
            pytest.fail(f"STRIPEFS_REQUIRE_FUSE is set, but {reason}")
        pytest.skip(reason)
    with Mount(binary()) as m:
        yield m


@pytest.fixture()
def client(mount):
    import stripefs

    with stripefs.Client(str(mount.path)) as c:
        yield c


def pattern(seed: int, n: int) -> bytes:
    """`n` bytes of a deterministic pattern."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
