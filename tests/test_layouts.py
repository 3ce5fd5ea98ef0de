"""Memory layouts of tensors kept in TensorRT's own formats between snippets."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.layouts import storage_bytes, storage_shape, to_logical, to_storage


@pytest.mark.parametrize("channels", [3, 8, 13, 64])
def test_hwc8_round_trip_pads_channels_to_eight(channels):
    rng = np.random.default_rng(channels)
    logical = rng.standard_normal((2, channels, 5, 7)).astype(np.float16)
    stored = to_storage(logical, "hwc8")
    padded = -(-channels // 8) * 8
    assert stored.shape == storage_shape(logical.shape, "hwc8") == (2, 5, 7, padded)
    assert storage_bytes(logical.shape, "float16", "hwc8") == stored.nbytes == 2 * 5 * 7 * padded * 2
    assert not stored[..., channels:].any()
    assert stored[1, 4, 6, channels - 1] == logical[1, channels - 1, 4, 6]  # channels are innermost
    np.testing.assert_array_equal(to_logical(stored.reshape(-1), logical.shape, "hwc8"), logical)


def test_linear_is_the_logical_layout():
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert storage_bytes(array.shape, "float32") == array.nbytes
    np.testing.assert_array_equal(to_logical(to_storage(array, "linear").reshape(-1), (2, 3, 4), "linear"), array)
