"""SMPP over TLS: the bind verifies the SMSC's certificate (against `tls_ca_file`) and
refuses one it cannot verify. The SMSC is the simulator behind a local TLS-terminating
proxy, with a self-signed certificate made for the test."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import make_settings

from ussd_gateway.app.config import SmppSettings
from ussd_gateway.app.server import create_app
from ussd_gateway.channels.smpp.presets import bind_settings
from ussd_gateway.testkit.smsc import SmscSimulator

SUB = "84977200003"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """(certificate, key) for CN/SAN 127.0.0.1: with `cryptography` when installed,
    else the openssl CLI; skips when neither is there."""
    cert, key = folder / "smsc.pem", folder / "smsc.key"
    try:
        import cryptography  # noqa: F401
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("neither the cryptography package nor the openssl CLI is available")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )
        return cert, key
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert, key


async def tls_proxy(cert: Path, key: Path, target_port: int) -> asyncio.Server:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    return await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)


async def gateway(aiohttp_client: Any, port: int, **tls: Any) -> Any:
    bind = bind_settings(
        {"name": "tls", "port": port, "password": "secret", "response_timeout_s": 2.0, "reconnect_min_s": 0.05,
         "reconnect_max_s": 0.2, "tls": True, **tls},
        "test",
    )
    return await aiohttp_client(create_app(dataclasses.replace(make_settings(""), smpp=SmppSettings(binds=(bind,)))))


async def test_tls_bind_verifies_the_smsc(aiohttp_client: Any, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    smsc = SmscSimulator(port=0, enquire_link_s=None)
    await smsc.start()
    proxy = await tls_proxy(cert, key, smsc.port)
    port = proxy.sockets[0].getsockname()[1]
    try:
        # Not verifiable without the CA: never bound.
        client = await gateway(aiohttp_client, port)
        with pytest.raises(TimeoutError):
            await smsc.wait_bound(timeout=0.8)
        await client.close()
        # With the CA: bound, and a dialogue works through TLS.
        client = await gateway(aiohttp_client, port, tls_ca_file=str(cert))
        await smsc.wait_bound(timeout=5)
        dialogue = await smsc.start_ussd(SUB, "*101#")
        assert (await dialogue.next_screen(timeout=5)).end
        await client.close()
    finally:
        proxy.close()
        await smsc.stop()
        await proxy.wait_closed()


async def test_tls_verify_false_accepts_a_lab_certificate(aiohttp_client: Any, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    smsc = SmscSimulator(port=0, enquire_link_s=None)
    await smsc.start()
    proxy = await tls_proxy(cert, key, smsc.port)
    try:
        client = await gateway(aiohttp_client, proxy.sockets[0].getsockname()[1], tls_verify=False)
        await smsc.wait_bound(timeout=5)
        await client.close()
    finally:
        proxy.close()
        await smsc.stop()
        await proxy.wait_closed()
