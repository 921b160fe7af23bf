"""`load_safetensors` against the reference loader (`safetensors.numpy.load_file`)."""

from __future__ import annotations

import numpy as np
import pytest

import stripefs

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def tensors(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "embed": rng.standard_normal((1000, 257), dtype=np.float32),
        "layer.0.w": rng.standard_normal((512, 512)).astype(np.float16),
        "layer.0.b": rng.standard_normal(512),
        "ids": rng.integers(-(2**40), 2**40, size=(33, 7), dtype=np.int64),
        "mask": rng.integers(0, 2, size=(17,), dtype=np.uint8).astype(np.bool_),
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.int32),
        "bytes": rng.integers(0, 255, size=(3, 3, 3), dtype=np.uint8),
    }


def test_load_safetensors_equals_the_reference(client, mount):
    path = mount.path / "model.safetensors"
    safetensors_numpy.save_file(tensors(1), str(path), metadata={"format": "np"})
    want = safetensors_numpy.load_file(str(path))
    got = stripefs.load_safetensors(client, str(path))
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert got[name].shape == want[name].shape, name
        assert np.array_equal(got[name], want[name]), name
    # Views into one registered buffer, not copies.
    bases = {id(a.base) for a in got.values() if a.size}
    assert len(bases) <= len(got)
    path.unlink()


def test_load_safetensors_of_a_file_larger_than_a_stripe(client, mount):
    path = mount.path / "big.safetensors"
    rng = np.random.default_rng(5)
    big = {f"t{i}": rng.standard_normal((256, 1024 + i), dtype=np.float32) for i in range(24)}
    safetensors_numpy.save_file(big, str(path))
    want = safetensors_numpy.load_file(str(path))
    got = stripefs.load_safetensors(client, str(path), depth=8)
    for name in want:
        assert np.array_equal(got[name], want[name]), name
    path.unlink()


def test_a_truncated_safetensors_file_is_an_error(client, mount):
    path = mount.path / "bad.safetensors"
    safetensors_numpy.save_file(tensors(2), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(stripefs.StripefsError) as e:
        stripefs.load_safetensors(client, str(path))
    assert e.value.errno == 22
    assert e.value.filename == str(path)
    path.unlink()


def test_a_pooled_buffer_is_reused_only_once_its_arrays_are_gone(client, mount):
    paths = [mount.path / f"pool{i}.safetensors" for i in range(2)]
    for i, p in enumerate(paths):
        safetensors_numpy.save_file(tensors(10 + i), str(p))
    refs = [safetensors_numpy.load_file(str(p)) for p in paths]
    first = stripefs.load_safetensors(client, str(paths[0]))
    second = stripefs.load_safetensors(client, str(paths[1]))
    # The second load did not reuse the first one's buffer: its arrays are intact.
    for got, ref in ((first, refs[0]), (second, refs[1])):
        for name in ref:
            assert np.array_equal(got[name], ref[name]), name
    del first, second
    again = stripefs.load_safetensors(client, str(paths[0]))
    for name in refs[0]:
        assert np.array_equal(again[name], refs[0][name]), name
    for p in paths:
        p.unlink()
