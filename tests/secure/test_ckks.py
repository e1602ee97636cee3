"""CKKS homomorphic aggregation (TenSEAL): sums, key separation, tampering, provisioning."""

import dataclasses
import stat
import subprocess
import sys

import numpy as np
import pytest
import tenseal as ts

from fedpharma.core.errors import CryptoError
from fedpharma.secure import frames
from fedpharma.secure.ckks import (
    MAX_CHUNK_BYTES,
    SLOTS,
    DecryptedMean,
    EncryptedUpdate,
    PublicContext,
    SecretContext,
    create_secret_context,
    load_public_context,
    load_secret_context,
    provision,
)

N_PARAMS = 3 * SLOTS + 123  # four ciphertexts, the last one partly filled
KEY_ID_BYTES = 16


@pytest.fixture(scope="module")
def secret() -> SecretContext:
    return create_secret_context()


@pytest.fixture(scope="module")
def public(secret) -> PublicContext:
    return PublicContext.from_bytes(secret.public_context().to_bytes())


@pytest.fixture(scope="module")
def encrypted(secret):
    return secret.encrypt_update(np.linspace(-1, 1, N_PARAMS), 7)


def _inner_context(blob: bytes, kind=frames.Kind.CKKS_PUBLIC_CONTEXT) -> bytes:
    """The TenSEAL bytes inside a framed context."""
    reader = frames.Reader(frames.unframe(blob, kind), kind)
    reader.fixed(KEY_ID_BYTES)
    return reader.blob(1 << 26)


def _framed_context(kind, key_id: bytes, raw: bytes) -> bytes:
    return frames.frame(kind, frames.Writer().fixed(key_id, KEY_ID_BYTES).blob(raw).getvalue())


def _flip(data: bytes, position: int) -> bytes:
    altered = bytearray(data)
    altered[position] ^= 0x01
    return bytes(altered)


def test_ten_sites_decrypt_to_the_fedavg_mean_within_the_ckks_error(secret, public):
    rng = np.random.default_rng(0)
    updates, counts = rng.normal(0, 0.05, size=(10, N_PARAMS)), rng.integers(10, 5000, size=10)
    uploads = [
        EncryptedUpdate.from_bytes(secret.encrypt_update(u, int(n)).to_bytes())
        for u, n in zip(updates, counts, strict=True)
    ]
    total = EncryptedUpdate.from_bytes(public.aggregate(uploads).to_bytes())
    weighted_sum = (updates * counts[:, None]).sum(axis=0)
    assert np.max(np.abs(secret.decrypt(total)[:-2] - weighted_sum)) < 1e-6  # measured ≈ 2.5e-9
    decrypted = secret.decrypt_weighted_mean(total, min_contributors=10)
    assert (decrypted.n_examples, decrypted.contributors) == (counts.sum(), 10)
    expected = weighted_sum / counts.sum()
    # float32 rounding (relative 6e-8) plus the CKKS error (~1e-9 absolute)
    np.testing.assert_allclose(decrypted.mean, expected, rtol=1.2e-7, atol=1e-9)
    wire = DecryptedMean.from_bytes(decrypted.to_bytes())
    np.testing.assert_array_equal(wire.mean, decrypted.mean)
    assert (wire.n_examples, wire.contributors) == (decrypted.n_examples, 10)


def test_a_site_refuses_to_decrypt_fewer_updates_than_asked(secret, public, encrypted):
    with pytest.raises(CryptoError, match="refusing to decrypt a sum of 1 update"):
        secret.decrypt_weighted_mean(public.aggregate([encrypted]))
    with pytest.raises(CryptoError, match="at least 3 are needed"):
        secret.decrypt_weighted_mean(public.aggregate([encrypted] * 2), min_contributors=3)
    single = DecryptedMean(np.zeros(3, np.float32), 5, 1).to_bytes()
    with pytest.raises(CryptoError, match="fewer than 2 contributors"):
        DecryptedMean.from_bytes(single)


def test_the_coordinator_context_holds_no_keys_and_cannot_decrypt(secret, public, encrypted):
    blob = public.to_bytes()
    assert len(blob) == len(secret.to_bytes())  # a SecretContext serializes without its key
    assert len(blob) < 1_000  # parameters only: no key material at all
    inner = ts.context_from(_inner_context(blob))
    assert not inner.has_secret_key() and not inner.has_galois_keys()
    assert not inner.has_relin_keys() and inner.is_public()
    assert not hasattr(public, "decrypt")
    with pytest.raises(ValueError, match="secret_key"):  # TenSEAL itself refuses too
        ts.ckks_vector_from(inner, encrypted.chunks[0]).decrypt()
    with pytest.raises(CryptoError, match="expected a CKKS_SECRET_CONTEXT"):
        SecretContext.from_bytes_including_secret_key(blob)
    forged = _framed_context(frames.Kind.CKKS_SECRET_CONTEXT, public.key_id, _inner_context(blob))
    with pytest.raises(CryptoError, match="no secret key"):
        SecretContext.from_bytes_including_secret_key(forged)


def test_a_public_context_carrying_secret_or_galois_keys_is_refused(secret):
    raw = _inner_context(secret.to_bytes_including_secret_key(), frames.Kind.CKKS_SECRET_CONTEXT)
    with pytest.raises(CryptoError, match="neither the secret key nor Galois keys"):
        PublicContext.from_bytes(
            _framed_context(frames.Kind.CKKS_PUBLIC_CONTEXT, secret.key_id, raw)
        )


def test_the_secret_context_round_trips_only_through_the_loudly_named_method(secret, encrypted):
    copy = SecretContext.from_bytes_including_secret_key(secret.to_bytes_including_secret_key())
    assert copy.key_id == secret.key_id
    np.testing.assert_allclose(copy.decrypt(encrypted), secret.decrypt(encrypted), atol=1e-9)


def test_tampered_truncated_and_foreign_ciphertexts_are_rejected(secret, public, encrypted):
    data = encrypted.to_bytes()
    with pytest.raises(CryptoError, match="digest"):
        EncryptedUpdate.from_bytes(_flip(data, len(data) // 2))
    with pytest.raises(CryptoError, match="truncated"):
        EncryptedUpdate.from_bytes(data[:-1000])
    # Inside a frame, a flipped coefficient bit may still parse (CKKS is malleable): the frame
    # digest above is what catches it; structurally broken ciphertexts are refused on load.
    chunk = encrypted.chunks[1]
    for altered in (_flip(chunk, 5), chunk[: len(chunk) // 2], b"\x00" * 64):
        forged = dataclasses.replace(encrypted, chunks=(chunk, altered, *encrypted.chunks[2:]))
        with pytest.raises(CryptoError, match="corrupt, truncated or made with other parameters"):
            public.aggregate([encrypted, forged])
    swapped = dataclasses.replace(encrypted, chunks=(encrypted.chunks[3], *encrypted.chunks[1:]))
    with pytest.raises(CryptoError, match="holds 125 values, expected 4096"):
        secret.decrypt(swapped)
    with pytest.raises(CryptoError, match="chunks"):
        dataclasses.replace(encrypted, chunks=encrypted.chunks[:2])


def test_a_parsed_update_views_its_frame_and_does_not_see_later_changes(secret, encrypted):
    data = encrypted.to_bytes()
    received = bytearray(data)
    parsed = EncryptedUpdate.from_bytes(received)
    received[len(received) // 2] ^= 0xFF  # inside a ciphertext
    assert parsed.to_bytes() == data
    assert all(bytes(p) == c for p, c in zip(parsed.chunks, encrypted.chunks, strict=True))
    np.testing.assert_allclose(secret.decrypt(parsed), secret.decrypt(encrypted), atol=0)


def test_a_chunk_announcing_more_than_the_size_limit_is_refused_before_reading_it(encrypted):
    body = frames.Writer().fixed(encrypted.key_id, KEY_ID_BYTES).u64(1).u32(1)
    body.u32(MAX_CHUNK_BYTES + 1).fixed(bytes(64), 64)
    with pytest.raises(CryptoError, match="exceeds the limit"):
        EncryptedUpdate.from_bytes(frames.frame(frames.Kind.CKKS_UPDATE, body.getvalue()))


def test_ciphertexts_of_another_key_or_other_parameters_are_rejected(secret, public, encrypted):
    other = create_secret_context()
    with pytest.raises(CryptoError, match="encrypted under CKKS key"):
        public.aggregate([encrypted, other.encrypt_update(np.zeros(N_PARAMS), 1)])
    small = ts.context(ts.SCHEME_TYPE.CKKS, 4096, -1, [40, 20, 40])
    small.global_scale = 2**20
    foreign = ts.ckks_vector(small, [1.0]).serialize()
    one_value = dataclasses.replace(secret.encrypt_update([], 1), chunks=(foreign,))
    with pytest.raises(CryptoError, match="other parameters"):
        public.aggregate([one_value])
    framed = _framed_context(
        frames.Kind.CKKS_PUBLIC_CONTEXT, secret.key_id, small.serialize(save_secret_key=False)
    )
    with pytest.raises(CryptoError, match="expected N=8192"):
        PublicContext.from_bytes(framed)
    # same N and scale, other primes
    other_primes = ts.context(ts.SCHEME_TYPE.CKKS, 8192, -1, [60, 60, 60])
    other_primes.global_scale = 2**40
    raw = other_primes.serialize(save_secret_key=False)
    framed = _framed_context(frames.Kind.CKKS_PUBLIC_CONTEXT, secret.key_id, raw)
    with pytest.raises(CryptoError, match=r"180-bit modulus.*primes \[60, 40, 40\]"):
        PublicContext.from_bytes(framed)
    with pytest.raises(CryptoError, match="differ in length"):
        public.aggregate([encrypted, secret.encrypt_update(np.zeros(5), 1)])


@pytest.mark.parametrize(
    "values", [[float("nan")], [0.0, float("-inf")], [2.0**25, 0.0], [0.0, -(2.0**25)]]
)
def test_unusable_updates_are_refused_before_encryption(secret, values):
    with pytest.raises(CryptoError, match="clip the update"):
        secret.encrypt_update(values, 100)


def test_a_site_refuses_to_encrypt_for_no_examples(secret):
    with pytest.raises(CryptoError, match="n_examples"):
        secret.encrypt_update([0.0], 0)


def test_provisioning_writes_a_private_key_file_and_a_public_context(tmp_path, encrypted):
    secret_path, public_path = tmp_path / "ckks.secret", tmp_path / "ckks.public"
    provisioned = provision(secret_path, public_path)
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    site, coordinator = load_secret_context(secret_path), load_public_context(public_path)
    assert site.key_id == coordinator.key_id == provisioned.key_id
    total = coordinator.aggregate([site.encrypt_update([1.0, 2.0], 2)] * 2)
    np.testing.assert_allclose(provisioned.decrypt(total), [4.0, 8.0, 4.0, 2.0], atol=1e-6)
    with pytest.raises(CryptoError, match="refusing to overwrite"):
        provision(secret_path, tmp_path / "other.public")


def test_importing_the_secure_package_does_not_import_tenseal():
    code = "import sys, fedpharma.secure; print('tenseal' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
