"""The fleet's keys and certificates: a CA, TLS server certificates, nkey seeds. No files here (see
:mod:`.setup_files`); the cryptography comes from the ``cryptography`` and ``nkeys`` packages, nothing home-made.

Certificates use ECDSA P-256. A server certificate names the server (DNS) and its address (IP), and serves both
as a TLS server certificate (clients, routes) and as a client certificate (the routes' mutual TLS).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass

import nkeys  # type: ignore[import-untyped]
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVER_DAYS = 825


@dataclass(frozen=True)
class KeyCert:
    key_pem: bytes
    cert_pem: bytes


def new_user_seed() -> bytes:
    """A new NATS user nkey seed (``SU…``), from the OS's random source."""
    seed: bytes = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed


def user_public_key(seed: bytes) -> str:
    """The public key (``U…``) of a user seed; ValueError when ``seed`` is not a user seed."""
    try:
        pair = nkeys.from_seed(bytearray(seed.strip()))
        public = bytes(pair.public_key).decode("ascii")
    except (nkeys.NkeysError, ValueError, TypeError) as exc:
        raise ValueError(f"not an nkey seed ({type(exc).__name__})") from None
    if not public.startswith("U"):
        raise ValueError("not a user nkey seed (its public key does not start with U)")
    return public


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "portsentinel fleet"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(now: dt.datetime, days: int = CA_DAYS) -> KeyCert:
    """A self-signed CA that signs only end certificates (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("portsentinel fleet CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyCert(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM))


def make_server_cert(ca: KeyCert, server: str, addr: str, now: dt.datetime, days: int = SERVER_DAYS) -> KeyCert:
    """A certificate for server ``server`` at ``addr``, signed by ``ca``."""
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an ECDSA key made by this tool")
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(server)).issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(server),
                                                    x509.IPAddress(ipaddress.ip_address(addr))]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return KeyCert(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM))


def cert_names(cert_pem: bytes) -> tuple[set[str], set[str]]:
    """The DNS names and IP addresses a certificate is valid for."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return set(san.get_values_for_type(x509.DNSName)), {str(a) for a in san.get_values_for_type(x509.IPAddress)}


def cert_expiry(cert_pem: bytes) -> dt.datetime:
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def signed_by(cert_pem: bytes, ca_cert_pem: bytes) -> bool:
    """Whether ``cert_pem`` was issued by the CA certificate ``ca_cert_pem`` (its signature verifies)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
