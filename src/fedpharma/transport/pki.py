"""Provisioning of a consortium's identities: one root CA, the coordinator and one cert per site.

A site's identity *is* its certificate: the coordinator reads the common name of the client
certificate presented during the mutual-TLS handshake and uses it as the site's name, so a site
cannot speak in another site's name. :func:`provision` writes one folder per party::

    out_dir/ca/            ca.pem, ca.key, ckks.secret  (keep offline; signs new or replacement
                                                        certs, keys new sites for CKKS)
    out_dir/coordinator/   ca.pem, cert.pem, key.pem, revoked.txt, ckks.public
    out_dir/sites/<name>/  ca.pem, cert.pem, key.pem, ckks.secret (the only folder a site receives)

Keys are EC P-256 (supported by every gRPC TLS stack) and written with mode 0600. ``ckks.secret``
is the consortium's CKKS key for ``[secure] mode = "ckks"`` (Cheon et al. 2017): every site holds
the same one, and the coordinator only ``ckks.public``, the encryption parameters without any key
(:mod:`fedpharma.secure.ckks`). Revoking a site does not take the CKKS key back from it: a
consortium that revokes a site under CKKS must re-provision (or use ``mode = "secagg"``, which has
no long-lived key). Revocation is a
plain-text list of revoked certificate serial numbers (``revoked.txt``, one hex serial a line,
``#`` comments), which the coordinator re-reads whenever it changes and checks on every call.

This module needs ``cryptography`` and TenSEAL; it never imports grpc.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedpharma.core.errors import ConfigError, CryptoError
from fedpharma.secure import ckks

NAME_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
"""Project and site names: DNS-label-like, so they are safe as CN, SAN, URI part and folder."""

CA_FILE, CERT_FILE, KEY_FILE, REVOKED_FILE = "ca.pem", "cert.pem", "key.pem", "revoked.txt"
CA_KEY_FILE = "ca.key"
CKKS_SECRET_FILE, CKKS_PUBLIC_FILE = "ckks.secret", "ckks.public"
DEFAULT_DAYS = 365


@dataclass(frozen=True)
class PartyFiles:
    """The PEM files one party (coordinator or site) needs for mutual TLS."""

    folder: Path
    ca: Path
    cert: Path
    key: Path

    @classmethod
    def in_folder(cls, folder: Path) -> PartyFiles:
        folder = Path(folder)
        return cls(folder, folder / CA_FILE, folder / CERT_FILE, folder / KEY_FILE)


@dataclass(frozen=True)
class Provisioned:
    """Where :func:`provision` wrote everything."""

    root: Path
    ca_cert: Path
    ca_key: Path
    coordinator: PartyFiles
    revoked: Path
    sites: dict[str, PartyFiles]
    ckks_public: Path


@dataclass(frozen=True)
class CertificateInfo:
    """What the coordinator needs to know about a presented certificate."""

    common_name: str
    serial: int
    not_valid_before: dt.datetime
    not_valid_after: dt.datetime


def provision(
    project: str,
    sites: Sequence[str],
    out_dir: Path,
    *,
    server_hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    days: int = DEFAULT_DAYS,
) -> Provisioned:
    """Create the CA, the coordinator's server certificate and one client certificate per site.

    ``server_hosts`` are the DNS names and IP addresses sites will dial; each becomes a subject
    alternative name of the coordinator's certificate, so TLS hostname checks pass. Refuses to
    overwrite an existing CA (re-provisioning would silently invalidate every issued cert).
    """
    problems = _name_problems(project, "project") + [
        p for site in sites for p in _name_problems(site, "site")
    ]
    if len(set(sites)) != len(sites):
        problems.append("site names must be unique")
    if not sites:
        problems.append("name at least one site")
    if not server_hosts:
        problems.append("name at least one server host")
    if days < 1:
        problems.append(f"days must be ≥ 1, got {days}")
    if problems:
        raise ConfigError(problems, source="provision")
    root = Path(out_dir)
    ca_dir = root / "ca"
    if (ca_dir / CA_KEY_FILE).exists():
        problem = f"{ca_dir} already holds a CA; choose an empty output folder"
        raise ConfigError([problem], source="provision")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, project),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{project} fedpharma root CA"),
        ]
    )
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_cert_path, ca_key_path = ca_dir / CA_FILE, ca_dir / CA_KEY_FILE
    _write(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(ca_key_path, ca_key)

    coordinator = PartyFiles.in_folder(root / "coordinator")
    _issue(
        ca_cert,
        ca_key,
        coordinator,
        common_name="coordinator",
        alt_names=[_host_name(h) for h in server_hosts],
        server=True,
        not_before=now,
        days=days,
    )
    revoked = coordinator.folder / REVOKED_FILE
    _write(revoked, b"# revoked certificate serials (hex), one a line\n")
    ckks_public = coordinator.folder / CKKS_PUBLIC_FILE
    ckks.provision(ca_dir / CKKS_SECRET_FILE, ckks_public)
    site_files = {
        site: issue_site_certificate(root, site, days=days, not_before=now) for site in sites
    }
    return Provisioned(
        root, ca_cert_path, ca_key_path, coordinator, revoked, site_files, ckks_public
    )


def issue_site_certificate(
    pki_root: Path,
    site: str,
    *,
    days: int = DEFAULT_DAYS,
    not_before: dt.datetime | None = None,
) -> PartyFiles:
    """Issue (or re-issue) ``site``'s client certificate with the CA under ``pki_root/ca``, and
    give it the consortium's CKKS key.

    Used to add a site after provisioning, or to replace a lost or revoked certificate (revoke
    the old serial first). ``not_before`` defaults to now.
    """
    problems = _name_problems(site, "site")
    if problems:
        raise ConfigError(problems, source="provision")
    root = Path(pki_root)
    ca_cert = load_certificate(root / "ca" / CA_FILE)
    try:
        ca_key = serialization.load_pem_private_key((root / "ca" / CA_KEY_FILE).read_bytes(), None)
    except (OSError, ValueError) as exc:
        raise CryptoError(f"cannot read the CA key under {root / 'ca'}: {exc}") from exc
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise CryptoError("the CA key is not an EC key; was it made by fedpharma provision?")
    project = ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    files = PartyFiles.in_folder(root / "sites" / site)
    uri = x509.UniformResourceIdentifier(f"urn:fedpharma:{project!s}:site:{site}")
    _issue(
        ca_cert,
        ca_key,
        files,
        common_name=site,
        alt_names=[x509.DNSName(f"{site}.{project!s}.fedpharma"), uri],
        server=False,
        not_before=not_before or _now(),
        days=days,
    )
    try:
        ckks_key = (root / "ca" / CKKS_SECRET_FILE).read_bytes()
    except OSError as exc:
        raise CryptoError(f"cannot read the CKKS key under {root / 'ca'}: {exc}") from exc
    _write_private(files.folder / CKKS_SECRET_FILE, ckks_key)
    return files


def revoke(revoked_file: Path, cert_file: Path) -> int:
    """Append the serial of ``cert_file`` to the coordinator's revocation list; return it."""
    serial = load_certificate(cert_file).serial_number
    with Path(revoked_file).open("a", encoding="utf-8") as out:
        out.write(f"{serial:x}\n")
    return serial


def read_revoked(revoked_file: Path) -> frozenset[int]:
    """The revoked serials listed in ``revoked_file`` (hex, one a line, ``#`` comments)."""
    serials = set()
    for number, line in enumerate(Path(revoked_file).read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            serials.add(int(text, 16))
        except ValueError as exc:
            raise ConfigError(
                [f"line {number}: {text!r} is not a hex serial number"], str(revoked_file)
            ) from exc
    return frozenset(serials)


def load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise CryptoError(f"cannot read certificate {path}: {exc}") from exc


def certificate_info(pem: bytes) -> CertificateInfo:
    """Common name, serial and validity of a PEM certificate (as seen on the wire)."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError as exc:
        raise CryptoError(f"peer certificate cannot be parsed: {exc}") from exc
    if len(names) != 1:
        raise CryptoError("peer certificate must carry exactly one common name")
    return CertificateInfo(
        str(names[0].value), cert.serial_number, cert.not_valid_before_utc, cert.not_valid_after_utc
    )


def check_party_files(files: PartyFiles, *, expect_client: bool) -> CertificateInfo:
    """Check a party's PEM files before dialing or serving, with an actionable message.

    Catches the common mistakes locally (expired or not-yet-valid certificate, a cert from
    another CA, a key that does not belong to the cert) instead of a terse TLS handshake failure.
    """
    ca, cert = load_certificate(files.ca), load_certificate(files.cert)
    try:
        key = serialization.load_pem_private_key(files.key.read_bytes(), None)
    except (OSError, ValueError) as exc:
        raise CryptoError(f"cannot read private key {files.key}: {exc}") from exc
    if key.public_key() != cert.public_key():
        raise CryptoError(f"{files.key} is not the key of {files.cert}")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CryptoError(f"{files.cert} was not issued by the CA in {files.ca}") from exc
    info = certificate_info(cert.public_bytes(serialization.Encoding.PEM))
    now = _now()
    if now > info.not_valid_after:
        raise CryptoError(
            f"certificate {files.cert} expired on {info.not_valid_after:%Y-%m-%d %H:%M} UTC; "
            "ask the consortium's CA operator for a new one"
        )
    if now < info.not_valid_before:
        raise CryptoError(
            f"certificate {files.cert} is valid only from {info.not_valid_before:%Y-%m-%d %H:%M}"
            " UTC; check this machine's clock"
        )
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    wanted = ExtendedKeyUsageOID.CLIENT_AUTH if expect_client else ExtendedKeyUsageOID.SERVER_AUTH
    if wanted not in usage:
        role = "a site (client)" if expect_client else "the coordinator (server)"
        raise CryptoError(f"certificate {files.cert} is not made for {role}")
    return info


# ----- helpers ------------------------------------------------------------------------------


def _issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    files: PartyFiles,
    *,
    common_name: str,
    alt_names: list[x509.GeneralName],
    server: bool,
    not_before: dt.datetime,
    days: int,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before - dt.timedelta(minutes=5))
        .not_valid_after(not_before + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(files.ca, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    _write_key(files.key, key)


def _host_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _name_problems(name: str, what: str) -> list[str]:
    if NAME_PATTERN.match(name):
        return []
    return [
        f"{what} name {name!r} must be 1-63 lower-case letters, digits or '-', "
        "starting and ending with a letter or digit"
    ]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(path, pem)


def _write_private(path: Path, data: bytes) -> None:
    """Write key material readable by its owner only (created 0600, never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)
