"""Every refusal at join names the site and says what to do, in a sentence a site operator can
act on: each check of ``check_join`` and each kind of setting difference.

Written against the survivors of `scripts/mutation.py join` (README, Development notes).
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from fedpharma.core.config import config_from_dict
from fedpharma.data.permutation import FingerprintPermutation
from fedpharma.data.preprocessing import SiteDescription
from fedpharma.server.join import (
    PreprocessingMismatch,
    SettingDifference,
    check_join,
    expected_preprocessing,
)
from tests.data.preprocessing_samples import BASE, KEY_A, N_REF, wire


@pytest.fixture(scope="module")
def expected() -> SiteDescription:
    return SiteDescription.expected(BASE, n_molecules=N_REF)


def refusal(expected: SiteDescription, found: SiteDescription, site: str = "s-1") -> str:
    with pytest.raises(PreprocessingMismatch) as caught:
        check_join(site, expected, wire(found))
    assert caught.value.site == site
    assert caught.value.source == 'preprocessing of site "s-1"'
    (problem,) = caught.value.problems
    assert problem.startswith('site "s-1" ')
    return problem


def test_another_reference_set_size_is_refused_with_both_sizes(expected):
    found = SiteDescription.of_site(BASE, n_molecules=N_REF // 2)
    assert refusal(expected, found) == (
        f'site "s-1" computed its reference digest over {N_REF // 2} public molecules, the '
        f"coordinator over {N_REF}; run the consortium's fedpharma release"
    )


def test_other_reference_features_name_both_digests_and_both_rdkit_versions(expected):
    found = dataclasses.replace(
        SiteDescription.of_site(BASE, n_molecules=N_REF), reference_digest="ab" * 32
    )
    rdkit = json.dumps(expected.recipe["rdkit_version"])
    message = refusal(expected, found)
    assert f"(digest {'ab' * 6}…, expected {expected.reference_digest[:12]}…)" in message
    assert f"its RDKit build (version {rdkit}) or its featurization code differs" in message
    assert f"from the coordinator's (RDKit {rdkit})" in message
    assert message.endswith("install the same RDKit build and an unmodified fedpharma release")


def test_a_permuted_digest_where_the_consortium_does_not_permute_is_refused(expected):
    found = dataclasses.replace(
        SiteDescription.of_site(BASE, n_molecules=N_REF), permuted_reference_digest="cd" * 32
    )
    assert refusal(expected, found) == (
        'site "s-1" sends a permuted reference digest but the consortium does not permute'
    )


def test_a_permutation_without_a_permuted_digest_is_refused():
    permutation = FingerprintPermutation.from_key(KEY_A, BASE.n_bits)
    keyed = SiteDescription.expected(BASE, permutation_key_id=permutation.key_id, n_molecules=N_REF)
    honest = SiteDescription.of_site(BASE, permutation, n_molecules=N_REF)
    found = dataclasses.replace(honest, permuted_reference_digest=None)
    assert refusal(keyed, found) == (
        'site "s-1" declares a fingerprint permutation but sends no permuted reference digest'
    )


def test_other_permuted_features_under_the_right_key_id_name_both_digests():
    permutation = FingerprintPermutation.from_key(KEY_A, BASE.n_bits)
    honest = SiteDescription.of_site(BASE, permutation, n_molecules=N_REF)
    pinned = SiteDescription.expected(
        BASE, permutation_key_id=permutation.key_id, n_molecules=N_REF
    )
    pinned = dataclasses.replace(pinned, permuted_reference_digest=honest.permuted_reference_digest)
    forged = dataclasses.replace(honest, permuted_reference_digest="ef" * 32)
    message = refusal(pinned, forged)
    digest = str(honest.permuted_reference_digest)
    assert f"(digest {'ef' * 6}…, expected {digest[:12]}…)" in message
    assert message.endswith("its permutation code differs; run the consortium's fedpharma release")


# ----- one sentence per setting difference --------------------------------------------------


def test_a_missing_setting_names_it_and_the_value_the_recipe_has():
    text = SettingDifference("radius", 2, None).describe("s")
    assert text == (
        'site "s" sends no "radius" setting (the consortium\'s recipe says 2); '
        "run the consortium's fedpharma release"
    )


def test_an_unknown_setting_names_it_and_its_value():
    text = SettingDifference("sneaky", None, "x").describe("s")
    assert text == (
        'site "s" sends a setting "sneaky" = "x" that the consortium\'s recipe does not have; '
        "run the consortium's fedpharma release"
    )


def test_a_setting_without_a_label_is_named_and_fixed_by_the_release():
    text = SettingDifference("fixed_in_code", 1, 2).describe("s")
    assert text == (
        'site "s" uses setting "fixed_in_code" 2, the consortium\'s recipe says 1; '
        "run the consortium's fedpharma release (this setting is fixed in code)"
    )


def test_a_permutation_difference_says_whether_to_load_or_remove_the_key():
    load = SettingDifference("fingerprint_permutation", True, False).describe("s")
    assert load.endswith("; load the consortium's fingerprint permutation key")
    remove = SettingDifference("fingerprint_permutation", False, True).describe("s")
    assert remove.endswith(
        "; remove the fingerprint permutation key: this consortium does not permute bits"
    )


# ----- which runs have a join check ---------------------------------------------------------


@pytest.mark.parametrize(("name", "checked"), [("chembl2321810", True), ("breast-cancer", False)])
def test_a_bundled_dataset_is_checked_only_when_it_holds_molecules(name, checked):
    recipe = config_from_dict({"dataset": {"name": name}, "features": {"radius": 2, "n_bits": 128}})
    assert (expected_preprocessing(recipe) is not None) == checked
