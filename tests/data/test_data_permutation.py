"""The secret fingerprint-bit permutation: derivation, application, key files, and a site's key
checked against the run recipe's key id."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import stat
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fedpharma.core.errors import ConfigError, CryptoError
from fedpharma.data.molecules import featurize
from fedpharma.data.permutation import (
    MIN_KEY_BYTES,
    FingerprintPermutation,
    load_permutation_key,
    site_permutation,
    write_permutation_key,
)
from fedpharma.data.preprocessing import reference_molecules
from tests.data.preprocessing_samples import BASE, KEY_A, KEY_B, N_REF

# ----- the fingerprint-bit permutation -------------------------------------------------------


def test_the_permutation_is_a_bijection_deterministic_per_key_and_different_across_keys() -> None:
    a = FingerprintPermutation.from_key(KEY_A, 2048)
    assert sorted(a.order.tolist()) == list(range(2048))
    assert np.array_equal(a.order, FingerprintPermutation.from_key(KEY_A, 2048).order)
    b = FingerprintPermutation.from_key(KEY_B, 2048)
    assert not np.array_equal(a.order, b.order)
    assert a.key_id != b.key_id
    assert not np.array_equal(a.order, np.arange(2048))
    assert np.mean(a.order == np.arange(2048)) < 0.01  # ~1/e fixed points expected in total


def test_the_permutation_derivation_is_pinned() -> None:
    """A known answer: any change to the derivation silently locks out sites on older releases,
    so it must come with a new PERMUTATION_SCHEME."""
    permutation = FingerprintPermutation.from_key(KEY_A, 16)
    assert permutation.order.tolist() == GOLDEN_ORDER_KEY_A_16
    assert permutation.key_id == GOLDEN_KEY_ID_A


def test_the_derivation_is_pinned_where_rejection_sampling_matters() -> None:
    """Key 0x01…01 at 65,536 bits draws one word that rejection sampling must discard."""
    order = FingerprintPermutation.from_key(b"\x01" * 32, 65536).order
    digest = hashlib.sha256(order.astype("<i8").tobytes()).hexdigest()
    assert digest == "7f1c8597ca20aad917c7a1ed090a0f4601ee4d7d6da1bd57be50ed42a623f7b0"


GOLDEN_ORDER_KEY_A_16 = [4, 2, 8, 15, 7, 5, 13, 6, 3, 1, 9, 10, 14, 11, 12, 0]


GOLDEN_KEY_ID_A = "c413f0ea057b1536"


def test_the_shuffle_is_uniform_over_small_permutations() -> None:
    counts = Counter(
        tuple(FingerprintPermutation.from_key(i.to_bytes(32, "big"), 3).order.tolist())
        for i in range(1200)
    )
    assert set(counts) == set(itertools.permutations(range(3)))
    assert all(140 < n < 260 for n in counts.values()), counts  # 200 expected, sd ≈ 13


def test_apply_moves_only_the_fingerprint_columns() -> None:
    n_bits, n_descriptors = 128, 7
    permutation = FingerprintPermutation.from_key(KEY_A, n_bits)
    rng = np.random.default_rng(0)
    features = rng.random((5, n_bits + n_descriptors)).astype(np.float32)
    given = features.copy()
    out = permutation.apply(features)
    assert out.dtype == np.float32
    assert np.array_equal(out[:, n_bits:], features[:, n_bits:])
    assert np.array_equal(out[:, :n_bits], features[:, permutation.order])
    assert not np.array_equal(out[:, :n_bits], features[:, :n_bits])
    assert np.array_equal(features, given)  # input untouched
    with pytest.raises(Exception, match="at least 128"):
        permutation.apply(features[:, :100])


def test_apply_on_real_fingerprints_keeps_each_molecules_bit_count() -> None:
    permutation = FingerprintPermutation.from_key(KEY_A, BASE.n_bits)
    plain = featurize(reference_molecules(N_REF)[:8], BASE)
    permuted = permutation.apply(plain)
    assert np.array_equal(permuted.sum(axis=1), plain.sum(axis=1))
    assert not np.array_equal(permuted, plain)


def test_neither_the_key_nor_the_order_appears_in_repr() -> None:
    permutation = FingerprintPermutation.from_key(KEY_A, 64)
    text = repr(permutation)
    assert KEY_A.hex() not in text
    assert str(permutation.order.tolist()[:4])[1:-1] not in text
    assert permutation.key_id in text


# ----- keys ----------------------------------------------------------------------------------


def test_a_short_key_is_refused() -> None:
    with pytest.raises(CryptoError, match="at least 32 bytes"):
        FingerprintPermutation.from_key(b"k" * (MIN_KEY_BYTES - 1), 1024)


def test_a_short_key_file_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "short.key"
    path.write_text("ab" * (MIN_KEY_BYTES - 1) + "\n")
    with pytest.raises(CryptoError, match=r"has 31 bytes; at least 32"):
        FingerprintPermutation.from_key_file(path, 1024)


@pytest.mark.parametrize("content", ["not hex at all " * 8, "abc"])
def test_a_malformed_key_file_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.key"
    path.write_text(content)
    with pytest.raises(CryptoError, match="hex"):
        load_permutation_key(path)


def test_a_missing_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CryptoError, match="does not exist"):
        load_permutation_key(tmp_path / "nowhere.key")


def test_a_written_key_file_loads_back_is_private_and_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "consortium.key"
    key_id = write_permutation_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = load_permutation_key(path)
    assert len(key) == MIN_KEY_BYTES
    assert FingerprintPermutation.from_key_file(path, 1024).key_id == key_id
    with pytest.raises(CryptoError, match="refusing to overwrite"):
        write_permutation_key(path)
    # whitespace and line breaks in a hand-copied key do not change it
    copy = tmp_path / "copy.key"
    copy.write_text(" " + key.hex()[:40] + "\n" + key.hex()[40:] + "\r\n")
    assert load_permutation_key(copy) == key


# ----- a site's permutation, from its key file and the run recipe's key id --------------------


def test_a_sites_key_file_and_the_recipes_key_id_must_agree(tmp_path: Path) -> None:
    key_file = tmp_path / "consortium.key"
    key_id = write_permutation_key(key_file)
    named = dataclasses.replace(BASE, permutation_key_id=key_id)
    permutation = site_permutation(named, key_file)
    assert permutation is not None and permutation.key_id == key_id
    assert permutation.n_bits == BASE.n_bits
    assert site_permutation(BASE, None) is None
    with pytest.raises(ConfigError, match=r"set `permutation_key` in site\.toml"):
        site_permutation(named, None)
    with pytest.raises(ConfigError, match=f'set \\[features\\] permutation_key_id = "{key_id}"'):
        site_permutation(BASE, key_file)
    other = dataclasses.replace(BASE, permutation_key_id="0" * 16)
    with pytest.raises(ConfigError, match=f"has id {key_id}.*use the consortium's key file"):
        site_permutation(other, key_file)
