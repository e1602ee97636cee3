"""Who said what in a secure round: site statements endorsed by the consortium PKI.

Against an *active* coordinator a site must know that a key advertisement, a signature on a
survivor set or a CKKS contribution really comes from the named site, not from the coordinator
that relays it (Bonawitz et al. 2017, §4, the active-adversary variant; there the long-term
signing keys come from a PKI too). A :class:`SiteIdentity` endorses a statement with the site's
long-term key: the EC P-256 key of its certificate from ``fedpharma provision``
(:mod:`fedpharma.transport.pki`), whose CA key stays offline and never reaches the coordinator.
A :class:`Consortium` (the CA certificate every site holds) checks an endorsement: the attached
certificate was issued by the CA, is valid now, names the site, and its key signed the
statement (ECDSA with SHA-256).

Per-round statements are signed with a fresh Ed25519 key (RFC 8032) that the site's endorsed
key advertisement carries: an endorsement binds the round key to the site identity once, and
the cheap Ed25519 signatures do the rest. What this does not give: sites do not read the
coordinator's revocation list, so a revoked site's key still endorses until its certificate
expires; whoever holds the CA key can mint identities (see ``docs/secure-aggregation.md``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key
from cryptography.x509.oid import NameOID

from fedpharma.core.errors import CryptoError
from fedpharma.secure.frames import Reader, Writer

MAX_CERTIFICATE_BYTES = 1 << 14
MAX_SIGNATURE_BYTES = 128
ED25519_KEY_BYTES = 32
ED25519_SIGNATURE_BYTES = 64


@dataclass(frozen=True)
class Endorsement:
    """A site's certificate (DER) and its ECDSA signature over one statement."""

    certificate: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if not 0 < len(self.certificate) <= MAX_CERTIFICATE_BYTES:
            raise CryptoError(f"an endorsement certificate is 1–{MAX_CERTIFICATE_BYTES} bytes")
        if not 0 < len(self.signature) <= MAX_SIGNATURE_BYTES:
            raise CryptoError(f"an endorsement signature is 1–{MAX_SIGNATURE_BYTES} bytes")


class SiteIdentity:
    """A site's long-term identity: its name, certificate and certificate key."""

    __slots__ = ("_certificate_der", "_key", "name")

    def __init__(
        self, name: str, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey
    ) -> None:
        if _common_name(certificate) != name:
            raise CryptoError(
                f"the certificate names {_common_name(certificate)!r}, not site {name!r}"
            )
        self.name = name
        self._certificate_der = certificate.public_bytes(Encoding.DER)
        self._key = key

    def endorse(self, statement: bytes) -> Endorsement:
        """This site's endorsement of ``statement``."""
        signature = self._key.sign(statement, ec.ECDSA(hashes.SHA256()))
        return Endorsement(self._certificate_der, signature)


class Consortium:
    """The consortium's CA certificate: checks that an endorsement comes from a named site."""

    __slots__ = ("_ca",)

    def __init__(self, ca: x509.Certificate) -> None:
        self._ca = ca

    def check(self, site: str, statement: bytes, endorsement: Endorsement) -> None:
        """Raise :class:`CryptoError` unless ``site`` endorsed ``statement``."""
        try:
            certificate = x509.load_der_x509_certificate(endorsement.certificate)
            certificate.verify_directly_issued_by(self._ca)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise CryptoError(
                f"the endorsement in the name of {site!r} carries a certificate the consortium "
                "CA did not issue: forged by the coordinator or from another consortium"
            ) from exc
        if _common_name(certificate) != site:
            raise CryptoError(
                f"a statement in the name of {site!r} is endorsed by the certificate of "
                f"{_common_name(certificate)!r}"
            )
        now = dt.datetime.now(dt.UTC)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise CryptoError(f"the certificate of {site!r} is not valid now; renew it")
        key = certificate.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise CryptoError(f"the certificate of {site!r} does not hold an EC key")
        try:
            key.verify(endorsement.signature, statement, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as exc:
            raise CryptoError(
                f"the statement in the name of {site!r} was not signed by {site!r}: "
                "altered or forged by the coordinator"
            ) from exc


def write_endorsement(writer: Writer, endorsement: Endorsement) -> None:
    writer.blob(endorsement.certificate).blob(endorsement.signature)


def read_endorsement(reader: Reader) -> Endorsement:
    return Endorsement(reader.blob(MAX_CERTIFICATE_BYTES), reader.blob(MAX_SIGNATURE_BYTES))


def verify_ed25519(public_key: bytes, signature: bytes, statement: bytes, what: str) -> None:
    """Raise :class:`CryptoError` unless ``signature`` is ``public_key``'s on ``statement``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, statement)
    except (ValueError, InvalidSignature) as exc:
        raise CryptoError(f"{what}: the signature does not verify (forged or altered)") from exc


def ephemeral_consortium(names: Sequence[str]) -> tuple[Consortium, dict[str, SiteIdentity]]:
    """A throwaway CA and one identity per site, for sites in one process (a simulation, a
    test). Deployment uses the provisioned PKI instead (:func:`load_identity`)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("fedpharma simulation CA", ca_key.public_key(), ca_key, None)
    identities = {}
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = _certificate(name, key.public_key(), ca_key, ca)
        identities[name] = SiteIdentity(name, certificate, key)
    return Consortium(ca), identities


def load_identity(
    name: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes
) -> tuple[Consortium, SiteIdentity]:
    """A deployed site's consortium and identity from its provisioned PEM files."""
    try:
        ca = x509.load_pem_x509_certificate(ca_pem)
        certificate = x509.load_pem_x509_certificate(cert_pem)
        key = load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CryptoError(f"site {name!r}: unreadable certificate or key file: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CryptoError(f"site {name!r}: the key file does not hold an EC key")
    return Consortium(ca), SiteIdentity(name, certificate, key)


def _common_name(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def _certificate(
    name: str,
    public_key: ec.EllipticCurvePublicKey,
    signer: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    return builder.sign(signer, hashes.SHA256())
