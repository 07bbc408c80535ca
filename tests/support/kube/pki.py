"""Certificates for the local control plane: a CA and leaf certificates (ECDSA P-256, 7 days)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class KeyPair:
    """A certificate and its key, as PEM and as cryptography objects."""

    cert_pem: bytes
    key_pem: bytes
    cert: Any
    key: Any


def new_key() -> Any:
    """A new ECDSA P-256 private key."""
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: Any) -> bytes:
    """``key`` as unencrypted PKCS#8 PEM."""
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_cert(
    cn: str,
    *,
    issuer: KeyPair | None = None,
    orgs: Sequence[str] = (),
    dns: Sequence[str] = (),
    ips: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
) -> KeyPair:
    """A CA (issuer None) or a leaf certificate signed by ``issuer``; ECDSA P-256, 7 days."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = new_key()
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    subject = x509.Name(attrs)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        builder = builder.add_extension(
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
            True,
        )
        signer = key
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), False
        )
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        )
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), False)
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), False)
        signer = issuer.key
    cert = builder.sign(signer, hashes.SHA256())
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), key_pem(key), cert, key)


@dataclass
class ControlPlanePki:
    """The certificate files a control plane's components read, and the admin's TLS context."""

    directory: Path
    """``ca.crt``, ``serving.crt``, ``admin.crt``, ``front-proxy-*``, ``sa.key``/``sa.pub``..."""
    ca: KeyPair
    admin: KeyPair
    context: ssl.SSLContext
    """TLS to the API server as the admin (trusts the CA, presents the admin certificate)."""


def write_control_plane_pki(
    directory: Path,
    *,
    name: str,
    serving_cn: str,
    serving_dns: Sequence[str],
    serving_ips: Sequence[str],
    extra: Mapping[str, KeyPair] | None = None,
    ca: KeyPair | None = None,
) -> ControlPlanePki:
    """Write the certificates every control plane here needs, each ``<pair>.crt``/``.key`` (0600).

    The CA (``<name>-ca``), the API server's serving certificate, the admin client
    (``system:masters``), the front proxy's own CA and client (the aggregation layer: lets
    the controller-manager and scheduler read the request-header CA, as in a real cluster)
    and the service-account signing key. ``extra`` pairs (signed by ``ca``, which the caller
    then makes first) are written beside them under their names.
    """
    from cryptography.hazmat.primitives import serialization

    directory.mkdir()
    ca = ca or make_cert(f"{name}-ca")
    admin = make_cert("admin", issuer=ca, orgs=["system:masters"], client=True)
    proxy_ca = make_cert(f"{name}-front-proxy-ca")
    pairs = {
        "ca": ca,
        "serving": make_cert(serving_cn, issuer=ca, dns=serving_dns, ips=serving_ips, server=True),
        "admin": admin,
        "front-proxy-ca": proxy_ca,
        "front-proxy-client": make_cert("front-proxy-client", issuer=proxy_ca, client=True),
        **(extra or {}),
    }
    sa_key = new_key()
    files = {
        f"{pair}.{ext}": pem
        for pair, kp in pairs.items()
        for ext, pem in (("crt", kp.cert_pem), ("key", kp.key_pem))
    }
    files["sa.key"] = key_pem(sa_key)
    files["sa.pub"] = sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for file, data in files.items():
        (directory / file).write_bytes(data)
        (directory / file).chmod(0o600)
    context = ssl.create_default_context(cafile=str(directory / "ca.crt"))
    context.load_cert_chain(str(directory / "admin.crt"), str(directory / "admin.key"))
    return ControlPlanePki(directory=directory, ca=ca, admin=admin, context=context)
