"""Preprocessing recipe (MELLODDY-TUNER's check): recipes and reference digests, join refusals
that name the differing setting, and the secret fingerprint-bit permutation."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fedpharma.config import FeaturesConfig
from fedpharma.data import recipe as recipe_module
from fedpharma.data.molecules import featurize
from fedpharma.data.recipe import (
    MIN_KEY_BYTES,
    FingerprintPermutation,
    JoinCheck,
    PreprocessingMismatch,
    PreprocessingRecipe,
    SiteDescription,
    check_join,
    feature_digest,
    load_permutation_key,
    recipe_differences,
    reference_digest,
    reference_molecules,
    site_permutation,
    write_permutation_key,
)
from fedpharma.errors import ConfigError, CryptoError, ProtocolError

N_REF = 64  # a small reference set keeps these tests fast; the default is larger
KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))
BASE = FeaturesConfig(radius=2, n_bits=1024)


def wire(description: SiteDescription) -> SiteDescription:
    """As the coordinator receives it: through JSON."""
    return SiteDescription.from_json(description.to_json())


# ----- recipe and reference digest -----------------------------------------------------------


def test_same_settings_give_the_same_recipe_digest_and_reference_digest() -> None:
    a = PreprocessingRecipe.from_features(FeaturesConfig(radius=2, n_bits=1024))
    b = PreprocessingRecipe.from_features(FeaturesConfig(n_bits=1024, radius=2))
    assert a == b
    assert a.digest() == b.digest()
    first = reference_digest(BASE, n_molecules=N_REF)
    recipe_module._reference_features.cache_clear()  # recomputed from scratch, not cached
    assert reference_digest(FeaturesConfig(radius=2, n_bits=1024), n_molecules=N_REF) == first
    assert len(first) == 64


def test_reference_digest_is_of_the_featurized_public_molecules() -> None:
    mols = reference_molecules(N_REF)
    assert len(mols) == N_REF
    assert reference_digest(BASE, n_molecules=N_REF) == feature_digest(featurize(mols, BASE))
    # shape is part of the digest, and -0.0 is the same feature as 0.0
    assert feature_digest(np.zeros((2, 3), np.float32)) != feature_digest(np.zeros((3, 2)))
    assert feature_digest(np.array([[-0.0]], np.float32)) == feature_digest(np.zeros((1, 1)))


@pytest.mark.parametrize(
    "change",
    [{"radius": 3}, {"n_bits": 2048}, {"counts": True}],
    ids=lambda c: next(iter(c)),
)
def test_a_different_setting_changes_both_digests(change: dict[str, object]) -> None:
    other = dataclasses.replace(BASE, **change)  # type: ignore[arg-type]
    assert PreprocessingRecipe.from_features(other).digest() != (
        PreprocessingRecipe.from_features(BASE).digest()
    )
    assert reference_digest(other, n_molecules=N_REF) != reference_digest(BASE, n_molecules=N_REF)


def test_recipe_holds_every_features_setting_as_json_scalars_and_no_key() -> None:
    permutation = FingerprintPermutation.from_key(KEY_A, BASE.n_bits)
    recipe = PreprocessingRecipe.from_features(BASE, permutation)
    as_dict = recipe.to_dict()
    assert {f.name for f in dataclasses.fields(FeaturesConfig)} <= set(as_dict)
    for name in ("recipe_version", "standardization", "standardization_version", "rdkit_version"):
        assert name in as_dict
    assert all(type(v) in (str, int, float, bool) for v in as_dict.values())
    assert as_dict["fingerprint_permutation"] is True
    assert as_dict["permutation_key_id"] == permutation.key_id
    text = json.dumps(as_dict, sort_keys=True, separators=(",", ":"))
    assert recipe.digest() == hashlib.sha256(text.encode()).hexdigest()
    assert KEY_A.hex() not in text
    assert PreprocessingRecipe.from_features(BASE).to_dict()["fingerprint_permutation"] is False


def test_importing_the_recipe_module_does_not_load_rdkit() -> None:
    code = "import sys, fedpharma.data.recipe; print('rdkit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ----- the join check ------------------------------------------------------------------------


def test_a_site_with_a_different_fingerprint_radius_is_refused_at_join_with_radius_named() -> None:
    coordinator = SiteDescription.expected(BASE, n_molecules=N_REF)
    site = SiteDescription.of_site(dataclasses.replace(BASE, radius=3), n_molecules=N_REF)
    with pytest.raises(PreprocessingMismatch) as caught:
        JoinCheck(coordinator).check("b", wire(site))
    message = str(caught.value)
    assert 'site "b" uses fingerprint radius (radius) 3' in message
    assert "the consortium's recipe says 2" in message
    assert "set [features] radius = 2" in message
    assert [d.name for d in caught.value.differences] == ["radius"]
    assert caught.value.site == "b"
    assert isinstance(caught.value, ConfigError)


def test_every_differing_setting_is_named_at_once() -> None:
    coordinator = SiteDescription.expected(BASE, n_molecules=N_REF)
    site = SiteDescription.of_site(
        dataclasses.replace(BASE, radius=3, n_bits=2048, counts=True), n_molecules=N_REF
    )
    with pytest.raises(PreprocessingMismatch) as caught:
        check_join("c", coordinator, wire(site))
    assert [d.name for d in caught.value.differences] == ["radius", "n_bits", "counts"]
    message = str(caught.value)
    assert "set [features] radius = 2" in message
    assert "set [features] n_bits = 1024" in message
    assert "set [features] counts = false" in message


def test_a_site_with_the_same_preprocessing_is_admitted() -> None:
    coordinator = SiteDescription.expected(BASE, n_molecules=N_REF)
    site = SiteDescription.of_site(FeaturesConfig(radius=2, n_bits=1024), n_molecules=N_REF)
    assert wire(site) == site
    check_join("a", coordinator, wire(site))
    JoinCheck(coordinator).check("a", wire(site))
    assert site.recipe_digest == PreprocessingRecipe.from_features(BASE).digest()


def test_same_settings_but_different_features_names_the_rdkit_versions() -> None:
    coordinator = SiteDescription.expected(BASE, n_molecules=N_REF)
    site = SiteDescription.of_site(BASE, n_molecules=N_REF)
    altered = dataclasses.replace(site, reference_digest="0" * 64)  # e.g. another RDKit build
    with pytest.raises(PreprocessingMismatch) as caught:
        check_join("d", coordinator, wire(altered))
    message = str(caught.value)
    assert "same preprocessing settings" in message
    assert f"RDKit {json.dumps(coordinator.recipe['rdkit_version'])}" in message
    assert "reference molecules differ" in message


def test_a_different_rdkit_version_is_named_with_what_to_install() -> None:
    expected = PreprocessingRecipe.from_features(BASE).to_dict()
    found = {**expected, "rdkit_version": "2023.09.1"}
    (difference,) = recipe_differences(expected, found)
    assert difference.name == "rdkit_version"
    text = difference.describe("e")
    assert '"2023.09.1"' in text
    assert f"install RDKit {expected['rdkit_version']}" in text


def test_missing_extra_and_retyped_settings_are_differences() -> None:
    expected = {"radius": 2, "counts": False}
    found = {"radius": 2.0, "extra": "x"}  # 2.0 is not the integer 2; counts is missing
    differences = recipe_differences(expected, found)
    assert [(d.name, d.expected, d.found) for d in differences] == [
        ("radius", 2, 2.0),
        ("counts", False, None),
        ("extra", None, "x"),
    ]
    assert "sends no" in differences[1].describe("f")
    assert "does not have" in differences[2].describe("f")


@pytest.mark.parametrize(
    "payload",
    [
        "not json",
        "[]",
        '{"recipe": {}, "reference_digest": "' + "0" * 64 + '"}',
        '{"recipe": {"a": [1]}, "reference_digest": "' + "0" * 64 + '",'
        ' "permuted_reference_digest": null, "reference_molecules": 1}',
        '{"recipe": {"a": NaN}, "reference_digest": "' + "0" * 64 + '",'
        ' "permuted_reference_digest": null, "reference_molecules": 1}',
        '{"recipe": {}, "reference_digest": "xyz",'
        ' "permuted_reference_digest": null, "reference_molecules": 1}',
        '{"recipe": {}, "reference_digest": "' + "0" * 64 + '",'
        ' "permuted_reference_digest": null, "reference_molecules": true}',
        "x" * 100_000,
    ],
)
def test_malformed_descriptions_from_the_network_are_protocol_errors(payload: str) -> None:
    with pytest.raises(ProtocolError):
        SiteDescription.from_json(payload)


def test_messages_quote_and_truncate_site_controlled_text() -> None:
    (difference,) = recipe_differences({"a": "x"}, {"a": "y\n" + "z" * 500})
    text = difference.describe("evil\nsite")
    assert "\n" not in text
    assert len(text) < 400


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


def test_a_wrong_key_changes_the_reference_digest_and_is_refused_at_join() -> None:
    a = FingerprintPermutation.from_key(KEY_A, BASE.n_bits)
    b = FingerprintPermutation.from_key(KEY_B, BASE.n_bits)
    plain = reference_digest(BASE, n_molecules=N_REF)
    with_a = reference_digest(BASE, a, n_molecules=N_REF)
    assert with_a == reference_digest(BASE, a, n_molecules=N_REF)
    assert len({plain, with_a, reference_digest(BASE, b, n_molecules=N_REF)}) == 3

    # The coordinator knows only key A's public id, never the key.
    coordinator = SiteDescription.expected(BASE, permutation_key_id=a.key_id, n_molecules=N_REF)
    check = JoinCheck(coordinator)
    check.check("a", wire(SiteDescription.of_site(BASE, a, n_molecules=N_REF)))
    with pytest.raises(PreprocessingMismatch) as caught:
        check.check("b", wire(SiteDescription.of_site(BASE, b, n_molecules=N_REF)))
    assert [d.name for d in caught.value.differences] == ["permutation_key_id"]
    assert f"key id {json.dumps(a.key_id)}" in str(caught.value)
    with pytest.raises(PreprocessingMismatch) as caught:
        check.check("c", wire(SiteDescription.of_site(BASE, n_molecules=N_REF)))
    assert "fingerprint_permutation" in [d.name for d in caught.value.differences]


def test_a_site_claiming_the_right_key_id_with_other_permuted_features_is_refused() -> None:
    a = FingerprintPermutation.from_key(KEY_A, BASE.n_bits)
    coordinator = SiteDescription.expected(BASE, permutation_key_id=a.key_id, n_molecules=N_REF)
    check = JoinCheck(coordinator)
    honest = SiteDescription.of_site(BASE, a, n_molecules=N_REF)
    check.check("first", wire(honest))  # pinned: trust on first use
    assert check.expected.permuted_reference_digest == honest.permuted_reference_digest
    forged = dataclasses.replace(honest, permuted_reference_digest="1" * 64)
    with pytest.raises(PreprocessingMismatch, match="permuted reference features differ"):
        check.check("second", wire(forged))
    with pytest.raises(PreprocessingMismatch, match="sends no permuted reference digest"):
        check.check("third", wire(dataclasses.replace(honest, permuted_reference_digest=None)))


def test_a_permutation_must_fit_the_fingerprint() -> None:
    permutation = FingerprintPermutation.from_key(KEY_A, 2048)
    with pytest.raises(ConfigError, match="n_bits"):
        PreprocessingRecipe.from_features(BASE, permutation)
    with pytest.raises(ConfigError, match="morgan"):
        PreprocessingRecipe.from_features(
            FeaturesConfig(fingerprint="none", descriptors=True), permutation
        )


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


# ----- with descriptors (the descriptor statistics cost ~10 s once) --------------------------


@pytest.mark.slow
def test_with_descriptors_the_permutation_leaves_descriptor_columns_and_digests_agree() -> None:
    features = FeaturesConfig(n_bits=1024, descriptors=True)
    permutation = FingerprintPermutation.from_key(KEY_A, features.n_bits)
    plain = featurize(reference_molecules(16), features)
    permuted = permutation.apply(plain)
    assert np.array_equal(permuted[:, 1024:], plain[:, 1024:])
    assert reference_digest(features, n_molecules=16) == feature_digest(plain)
    assert reference_digest(features, permutation, n_molecules=16) == feature_digest(permuted)


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
