"""TLS for chansink and chanproxy: the server context of --tls-cert/--tls-key.

TLS 1.2 and 1.3, ALPN ``http/1.1`` (the only protocol spoken); the
certificate file may hold the whole chain. No client certificates.
"""

from __future__ import annotations

import ssl
from pathlib import Path

ALPN = ["http/1.1"]
# What a TLS transport may hold each way before flow control acts: as much
# as a plain one (asyncio's and uvloop's TLS transports default to 512 KiB of
# writes and 256 KiB of reads per connection).
BUFFER_HIGH = 64 * 1024


def bound_buffers(transport) -> None:
    """Give a TLS transport a plain one's flow-control limits; nothing for plain ones."""
    if transport.get_extra_info("ssl_object") is not None:
        transport.set_write_buffer_limits(high=BUFFER_HIGH)
        transport.set_read_buffer_limits(high=BUFFER_HIGH)


def server_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(ALPN)
    ctx.load_cert_chain(cert, key)
    return ctx


def problems(cert: str | None, key: str | None) -> list[str]:
    """What is wrong with --tls-cert/--tls-key: one without the other, a missing
    file, or a certificate and key that do not load (or do not match)."""
    if cert is None and key is None:
        return []
    if cert is None or key is None:
        given, missing = ("--tls-cert", "--tls-key") if key is None else ("--tls-key", "--tls-cert")
        return [f"{given} needs {missing} too"]
    out = [
        f"{opt} {path}: no such file"
        for opt, path in (("--tls-cert", cert), ("--tls-key", key))
        if not Path(path).is_file()
    ]
    if out:
        return out
    try:
        server_context(cert, key)
    except (OSError, ssl.SSLError) as exc:
        return [f"--tls-cert {cert} / --tls-key {key}: cannot be used ({exc})"]
    return []


def throwaway_ca(directory: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> dict:
    """A CA made now, valid for a day, and a server certificate it issued for
    ``hosts``, written into ``directory`` as PEM files (the key readable by its
    owner only): ``{"ca": ..., "cert": ..., "key": ...}`` paths.

    For `chanload suite --embedded --tls`: the whole path encrypted on one
    machine, with verification on, and nothing to install or trust system-wide.
    """
    import datetime
    import ipaddress
    import os

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))

    def build(subject: str, issuer: x509.Name | None, key, signer, extensions) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(validity[0])
            .not_valid_after(validity[1])
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = build(
        "chanload throwaway CA",
        None,
        ca_key,
        ca_key,
        [
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (
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
            ),
            (x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False),
        ],
    )
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = build(
        hosts[0],
        ca.subject,
        key,
        ca_key,
        [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.SubjectAlternativeName(names), False),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
        ],
    )
    paths = {
        "ca": directory / "ca.pem",
        "cert": directory / "server.pem",
        "key": directory / "server.key",
    }
    pem = serialization.Encoding.PEM
    paths["ca"].write_bytes(ca.public_bytes(pem))
    paths["cert"].write_bytes(leaf.public_bytes(pem))
    fd = os.open(paths["key"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "wb") as out:
        out.write(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
    return paths
