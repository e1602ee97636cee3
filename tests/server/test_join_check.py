"""The coordinator's join check: refusals that name every differing setting and say how to fix
it, with and without a fingerprint permutation."""

from __future__ import annotations

import dataclasses
import json

import pytest

from fedpharma.core.config import FeaturesConfig
from fedpharma.core.errors import ConfigError
from fedpharma.data.permutation import FingerprintPermutation
from fedpharma.data.preprocessing import (
    PreprocessingRecipe,
    SiteDescription,
    reference_digest,
)
from fedpharma.server.join import JoinCheck, PreprocessingMismatch, check_join, recipe_differences
from tests.data.preprocessing_samples import BASE, KEY_A, KEY_B, N_REF, wire

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


def test_messages_quote_and_truncate_site_controlled_text() -> None:
    (difference,) = recipe_differences({"a": "x"}, {"a": "y\n" + "z" * 500})
    text = difference.describe("evil\nsite")
    assert "\n" not in text
    assert len(text) < 400


# ----- with a fingerprint permutation -------------------------------------------------------


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
