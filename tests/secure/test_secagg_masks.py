"""The masks of secure aggregation: added block by block, they equal the PRG's whole keystreams."""

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedpharma.secure.quantize import RING_DTYPES
from fedpharma.secure.secagg.masks import _MASK_BLOCK_BYTES, Mask, add_masks


def _keystream(seed: bytes, length: int, dtype) -> np.ndarray:
    """The PRG by its definition: AES-256-CTR, zero IV, over zero bytes, all at once."""
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    return np.frombuffer(encryptor.update(bytes(length * dtype.itemsize)), dtype=dtype)


@pytest.mark.parametrize("bits", [32, 64])
def test_blockwise_masks_equal_whole_keystreams_added_and_subtracted(bits):
    dtype = RING_DTYPES[bits]
    length = 2 * _MASK_BLOCK_BYTES // dtype.itemsize + 5  # two full blocks and a partial one
    rng = np.random.default_rng(bits)
    start = rng.integers(0, 2**bits, size=length, dtype=dtype)
    seeds = [rng.bytes(32) for _ in range(3)]
    total = start.copy()
    add_masks(total, [Mask(seeds[0], +1), Mask(seeds[1], -1), Mask(seeds[2], +1)])
    expected = start.copy()
    expected += _keystream(seeds[0], length, dtype)
    expected -= _keystream(seeds[1], length, dtype)
    expected += _keystream(seeds[2], length, dtype)
    np.testing.assert_array_equal(total, expected)
    add_masks(total, [Mask(seeds[2], -1), Mask(seeds[1], +1), Mask(seeds[0], -1)])
    np.testing.assert_array_equal(total, start)
    with pytest.raises(ValueError, match="added"):
        Mask(seeds[0], 2)
