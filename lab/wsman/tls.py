"""TLS material for the lab's WinRM HTTPS listeners: a per-lab CA and server certificates it signs.

Clients validate the server certificate against the CA file (DESIGN.md invariant 7: TLS certificates are
validated by default), so the lab writes its CA certificate to a PEM file that the inventory can name as
`cert_validation=<path>` for pypsrp.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class CertificateAuthority:
    """A lab CA: its certificate and key (PEM) and the path of the certificate file for clients."""

    cert_pem: bytes
    key_pem: bytes
    cert_path: Path

    @classmethod
    def create(cls, directory: Path, common_name: str = "snlm lab CA") -> CertificateAuthority:
        """Make a new CA and write its certificate to `directory/ca.pem` (readable: it is public)."""
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
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
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        cert_path = directory / "ca.pem"
        cert_path.write_bytes(cert_pem)
        return cls(cert_pem=cert_pem, key_pem=key_pem, cert_path=cert_path)

    def issue_server_certificate(self, directory: Path, name: str, dns_names: tuple[str, ...] = ()) -> TlsMaterial:
        """Issue a server certificate for `name`, "localhost", 127.0.0.1 and `dns_names`.

        The key file is written with mode 0600: it is a secret of the lab host.
        """
        directory.mkdir(parents=True, exist_ok=True)
        ca_cert = x509.load_pem_x509_certificate(self.cert_pem)
        ca_key = serialization.load_pem_private_key(self.key_pem, password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise TypeError("the lab CA key must be an EC key")
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = []
        seen: set[str] = set()
        for dns in (name, "localhost", *dns_names):
            if dns and dns.lower() not in seen:
                seen.add(dns.lower())
                names.append(x509.DNSName(dns))
        names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name or "localhost")]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in (name or "localhost"))
        cert_path = directory / f"{safe}.pem"
        key_path = directory / f"{safe}.key"
        # The chain file holds the leaf then the CA, as a Windows listener presents it.
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + self.cert_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        return TlsMaterial(
            cert_path=cert_path,
            key_path=key_path,
            ca_path=self.cert_path,
            cert_der=cert.public_bytes(serialization.Encoding.DER),
        )


@dataclass(frozen=True)
class TlsMaterial:
    """A server certificate chain, its key and the CA file that clients validate it against."""

    cert_path: Path
    key_path: Path
    ca_path: Path
    cert_der: bytes

    @functools.cached_property
    def server_context(self) -> ssl.SSLContext:
        """An SSLContext for the listener (built once, shared by the endpoint's connections)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert_path), str(self.key_path))
        return ctx

    def channel_binding_application_data(self) -> bytes:
        """RFC 5929 tls-server-end-point data, as the client computes it from the certificate it saw.

        pypsrp hashes the leaf certificate with its signature hash (SHA-256 here; MD5/SHA-1 become SHA-256)
        and NTLM over HTTPS binds the authentication to it, so the server must compute the same value.
        """
        cert = x509.load_der_x509_certificate(self.cert_der)
        algorithm = cert.signature_hash_algorithm
        name = algorithm.name if algorithm is not None and algorithm.name not in ("md5", "sha1") else "sha256"
        return b"tls-server-end-point:" + hashlib.new(name, self.cert_der).digest()


def make_tls_material(directory: Path, host_name: str, dns_names: tuple[str, ...] = ()) -> TlsMaterial:
    """Convenience: a fresh CA in `directory` and one server certificate for `host_name`."""
    ca = CertificateAuthority.create(directory)
    return ca.issue_server_certificate(directory, host_name, dns_names)
