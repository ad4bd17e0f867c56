"""Test certificates, made at test time with ``cryptography`` (a test-only dependency).

A CA, a server certificate for 127.0.0.1/localhost, and client certificates (one from
the CA, one from a stranger CA), written as PEM files into a directory.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# bcrypt of "s3cret" (cost 10), made once with bcrypt.hashpw; the $2y$ form htpasswd writes
PASSWORD = "s3cret"
HASH = "$2y$10$744Zfk6Ba/Zhpgh1QIYD9.EX.H/mE/Lj4nd.k3i9elqj09fpwHPSi"


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Certs:
    ca: Path
    server: Pair
    client: Pair
    stranger: Pair  # a client certificate from another CA


def _name(cn: str) -> x509.Name:
    return x509.Name(
        # the conventional order (most general first): RFC 4514 writes it CN=...,O=...
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dtagent tests"),
         x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


def _write(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
           ) -> Pair:
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return Pair(cert_path, key_path)


def _issue(
    subject: str,
    issuer_name: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    usage: ExtendedKeyUsageOID | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


def make_certs(directory: Path) -> Certs:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert, _ = _issue("dtagent test CA", _name("dtagent test CA"), ca_key, ca=True, key=ca_key)
    ca = _write(directory, "ca", ca_cert, ca_key)
    server = _write(
        directory,
        "server",
        *_issue(
            "localhost", ca_cert.subject, ca_key,
            sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
        ),
    )
    client = _write(
        directory,
        "client",
        *_issue(
            "prometheus", ca_cert.subject, ca_key,
            sans=[x509.DNSName("prometheus.example.org")],
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        ),
    )
    other_key = ec.generate_private_key(ec.SECP256R1())
    stranger = _write(
        directory,
        "stranger",
        *_issue(
            "prometheus", _name("another CA"), other_key,
            sans=[x509.DNSName("prometheus.example.org")],
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        ),
    )
    return Certs(ca.cert, server, client, stranger)
