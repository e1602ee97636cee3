"""Preprocessing recipe (MELLODDY-TUNER's check): recipes, reference digests, and the site
description as it arrives from the network."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from fedpharma.core.config import FeaturesConfig
from fedpharma.core.errors import ConfigError, ProtocolError
from fedpharma.data import preprocessing
from fedpharma.data.molecules import featurize
from fedpharma.data.permutation import FingerprintPermutation
from fedpharma.data.preprocessing import (
    PreprocessingRecipe,
    SiteDescription,
    feature_digest,
    reference_digest,
    reference_molecules,
)
from tests.data.preprocessing_samples import BASE, KEY_A, N_REF

# ----- recipe and reference digest -----------------------------------------------------------


def test_same_settings_give_the_same_recipe_digest_and_reference_digest() -> None:
    a = PreprocessingRecipe.from_features(FeaturesConfig(radius=2, n_bits=1024))
    b = PreprocessingRecipe.from_features(FeaturesConfig(n_bits=1024, radius=2))
    assert a == b
    assert a.digest() == b.digest()
    first = reference_digest(BASE, n_molecules=N_REF)
    preprocessing._reference_features.cache_clear()  # recomputed from scratch, not cached
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


def test_a_permutation_must_fit_the_fingerprint() -> None:
    permutation = FingerprintPermutation.from_key(KEY_A, 2048)
    with pytest.raises(ConfigError, match="n_bits"):
        PreprocessingRecipe.from_features(BASE, permutation)
    with pytest.raises(ConfigError, match="morgan"):
        PreprocessingRecipe.from_features(
            FeaturesConfig(fingerprint="none", descriptors=True), permutation
        )


def test_importing_the_preprocessing_modules_does_not_load_rdkit() -> None:
    code = (
        "import sys, fedpharma.data.preprocessing, fedpharma.data.permutation;"
        " print('rdkit' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ----- the site description from the network ------------------------------------------------


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
