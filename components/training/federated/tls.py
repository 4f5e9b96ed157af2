"""Certificates for Flower's deployment engine: a private certificate authority and
a server certificate for the SuperLink's addresses, made with `cryptography`.

The SuperLink gets `--ssl-ca-certfile ca.pem --ssl-certfile server.pem
--ssl-keyfile server.key`; every SuperNode (and `flwr`'s config) gets only the CA
certificate (`--root-certificates ca.pem`), so it talks to this SuperLink and no
other. Keys are written owner-only.

    python -m components.training.federated.tls --out .edgeloop/flwr/certs \
        --host 127.0.0.1
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Certificates:
    ca: Path  # for SuperNodes and flwr: --root-certificates
    server_cert: Path  # SuperLink: --ssl-certfile
    server_key: Path  # SuperLink: --ssl-keyfile


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgeloop"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def make_certificates(folder: Path, hosts: list[str], days: int = 365) -> Certificates:
    """A CA and a server certificate valid for `hosts` (IP addresses or names)."""
    if not hosts:
        raise ValueError("hosts: expected at least one SuperLink address")
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    until = now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _ca_certificate(ca_key, now, until)
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        _valid(x509.CertificateBuilder(), now, until)
        .subject_name(_name(hosts[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .add_extension(
            x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    certs = Certificates(
        folder / "ca.pem", folder / "server.pem", folder / "server.key"
    )
    certs.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    certs.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    _write_key(certs.server_key, key)
    _write_key(folder / "ca.key", ca_key)  # to sign a new server certificate later
    return certs


def _valid(
    builder: x509.CertificateBuilder,
    now: datetime.datetime,
    until: datetime.datetime,
) -> x509.CertificateBuilder:
    return (
        builder.serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
    )


def _ca_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    now: datetime.datetime,
    until: datetime.datetime,
) -> x509.Certificate:
    """A self-signed CA that may sign server certificates only (path length 0)."""
    ca_name = _name("edgeloop federated CA")
    usage = x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=True,
        crl_sign=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )
    return (
        _valid(x509.CertificateBuilder(), now, until)
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .sign(ca_key, hashes.SHA256())
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--host", action="append", required=True, help="SuperLink address (repeat)"
    )
    parser.add_argument("--days", type=int, default=365)
    args = parser.parse_args(argv)
    certs = make_certificates(args.out, args.host, args.days)
    print(f"CA {certs.ca}\nserver {certs.server_cert} (key {certs.server_key})")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
