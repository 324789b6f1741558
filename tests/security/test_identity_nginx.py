"""The documented nginx fronts assert callers safely.

docs/middleware.md ("Trusted proxies"): nginx authenticates callers with TLS
client certificates, maps the certificate's CN to a caller id and proves
itself to the service with the proxy secret. docs/sidecar.md ("Callers
authenticated by nginx"): the same, asking the sidecar's check endpoint. A
client cannot choose its identity through nginx (its own ``X-Caller`` and
``X-Guard-Proxy-Secret`` are replaced) nor around it (no secret, no identity).
Both nginx configurations are read from the pages themselves (one source of truth).
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sidecarkit import Nginx, need_nginx, policy_copy, serve_sidecar, sidecar_settings
from tokenkit import Keys, UvicornThread, audit_rows, guard_settings

from bench._pg import free_port
from examples.customers import create_app
from guard._guard import Guard
from guard.config import IdentitySettings
from guard.policy import resolve_policy_dir

PAYMENT = "/customers/c-0001/payment"
PURPOSE = {"x-purpose": "order.processing"}


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: tuple[Path, Path]
    clients: dict[str, tuple[Path, Path]]


def _write(base: Path, name: str, cert: x509.Certificate,
           key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    cert_path, key_path = base / f"{name}.pem", base / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example")])


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
           signer: ec.EllipticCurvePrivateKey, *, ca: bool = False,
           ip: str | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(subject))
               .issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ip is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False)
    return builder.sign(signer, hashes.SHA256())


def _ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    return _issue(name, key, _name(name), key, ca=True), key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("pki")
    ca, ca_key = _ca("callers CA")
    rogue, rogue_key = _ca("callers CA")  # same name, different key
    ca_path = base / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _write(base, "server", _issue("127.0.0.1", server_key, ca.subject, ca_key,
                                           ip="127.0.0.1"), server_key)
    clients = {}
    for name, cn, issuer, signer in (("billing", "billing", ca, ca_key),
                                     ("odd", "Bad Name", ca, ca_key),
                                     ("rogue", "billing", rogue, rogue_key)):
        key = ec.generate_private_key(ec.SECP256R1())
        clients[name] = _write(base, name, _issue(cn, key, issuer.subject, signer), key)
    return Pki(ca_path, server, clients)


REPO = Path(__file__).resolve().parents[2]


def _documented(page: str, heading: str, **values: str) -> str:
    """The first nginx block under ``heading`` in ``docs/<page>``, made to run here.

    Args:
        page: The page's file name under docs/.
        heading: The heading the block follows.
        values: ``port``, ``server_cert``, ``server_key``, ``ca``, ``secret`` and the
            ``upstream`` (and ``sidecar``) URLs to put in place of the page's examples.
    """
    text = (REPO / "docs" / page).read_text()
    found = re.search(r"```nginx\n(.*?)```", text.split(heading, 1)[1], re.S)
    assert found is not None, heading
    block = found.group(1)
    swaps = {"listen 443 ssl;": f"listen 127.0.0.1:{values['port']} ssl;",
             "/etc/nginx/tls/server.pem": values["server_cert"],
             "/etc/nginx/tls/server.key": values["server_key"],
             "/etc/nginx/tls/callers-ca.pem": values["ca"],
             "contents of /etc/guard/proxy-secret": values["secret"]}
    if "sidecar" in values:
        swaps["http://127.0.0.1:8181"] = values["sidecar"]
        swaps["http://127.0.0.1:9000"] = values["upstream"]
    else:
        swaps["http://127.0.0.1:8000"] = values["upstream"]
    for example, value in swaps.items():
        assert example in block, f"docs/{page}: {example!r} not in the block"
        block = block.replace(example, value)
    return block


@dataclass(frozen=True)
class Front:
    nginx: str
    service: str
    db: Path


@pytest.fixture(scope="module")
def front(pki: Pki, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    need_nginx()
    base = tmp_path_factory.mktemp("front")
    settings = guard_settings(base, keys, proxy_secret_file=keys.proxy_file, development=None)
    guard = Guard.from_settings(settings)
    port = free_port()
    try:
        with UvicornThread(create_app(settings, guard=guard)) as service:
            nginx = Nginx(base / "nginx", _documented(
                "middleware.md", "### Trusted proxies", port=str(port),
                server_cert=str(pki.server[0]), server_key=str(pki.server[1]), ca=str(pki.ca),
                secret=keys.proxy_secret, upstream=service.url))
            nginx.start(port)
            try:
                yield Front(f"https://127.0.0.1:{port}", service.url, base / "audit.db")
            finally:
                nginx.stop()
    finally:
        guard.close()


def _client(pki: Pki, who: str | None) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if who is not None:
        cert, key = pki.clients[who]
        context.load_cert_chain(str(cert), str(key))
    return httpx.Client(verify=context, timeout=10)


def test_a_certificate_caller_is_asserted_by_nginx(front: Front, pki: Pki) -> None:
    with _client(pki, "billing") as client:
        response = client.get(front.nginx + PAYMENT, headers=PURPOSE)
    assert response.status_code == 200, response.text
    row = audit_rows(front.db, "event_id = ?", (response.headers["x-guard-decision-id"],))[0]
    assert (row["caller"], row["allowed"]) == ("svc:billing", 1)


def test_a_client_cannot_name_itself_through_nginx(front: Front, pki: Pki, keys: Keys) -> None:
    spoof = {"x-caller": "svc:support", "x-guard-proxy-secret": keys.proxy_secret,
             "x-forwarded-for": "10.9.9.9", "x-purpose": "rights.request"}
    with _client(pki, "billing") as client:
        response = client.get(front.nginx + "/customers/c-0001", headers=spoof)
    # nginx replaced X-Caller: the caller is the certificate's, and svc:billing
    # may not declare rights.request.
    assert response.status_code == 403, response.text
    row = audit_rows(front.db, "event_id = ?", (response.json()["decision_id"],))[0]
    assert row["caller"] == "svc:billing"


def test_a_certificate_without_a_caller_name_asserts_nothing(front: Front, pki: Pki) -> None:
    with _client(pki, "odd") as client:
        response = client.get(front.nginx + PAYMENT,
                              headers={**PURPOSE, "x-caller": "svc:billing"})
    assert response.status_code == 401
    assert response.json()["reason"] == "unauthenticated"


@pytest.mark.parametrize("who", [None, "rogue"])
def test_no_or_a_foreign_certificate_is_refused_by_nginx(
    front: Front, pki: Pki, who: str | None
) -> None:
    with _client(pki, who) as client:
        response = client.get(front.nginx + PAYMENT,
                              headers={**PURPOSE, "x-caller": "svc:billing"})
    assert response.status_code == 400  # nginx: no (valid) client certificate
    assert "payment_card" not in response.text


def test_around_nginx_the_caller_header_gets_401(front: Front) -> None:
    response = httpx.get(front.service + PAYMENT, headers={
        **PURPOSE, "x-caller": "svc:billing", "x-forwarded-for": "127.0.0.1"})
    assert response.status_code == 401
    assert response.json()["reason"] == "unauthenticated"


UPSTREAM = """
server {{
    listen 127.0.0.1:{upstream_port};
    location / {{ return 200 "caller=$http_x_guard_caller xcaller=$http_x_caller \
secret=$http_x_guard_proxy_secret xff=$http_x_forwarded_for fwd=$http_forwarded\n"; }}
}}
"""


@pytest.fixture(scope="module")
def checked(pki: Pki, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    need_nginx()
    base = tmp_path_factory.mktemp("checked")
    policy = policy_copy(base / "policy", resolve_policy_dir(None))
    identity = IdentitySettings(proxy_secret_file=keys.proxy_file, audience="purpose-guard",
                                issuer="purpose-guard-dev")
    port, upstream_port = free_port(), free_port()
    with serve_sidecar(sidecar_settings(base, policy, identity)) as sidecar:
        nginx = Nginx(base / "nginx", _documented(
            "sidecar.md", "## Callers authenticated by nginx", port=str(port),
            server_cert=str(pki.server[0]), server_key=str(pki.server[1]), ca=str(pki.ca),
            secret=keys.proxy_secret, sidecar=f"http://127.0.0.1:{sidecar.port}",
            upstream=f"http://127.0.0.1:{upstream_port}",
        ) + UPSTREAM.format(upstream_port=upstream_port))
        nginx.start(port, upstream_port)
        try:
            yield f"https://127.0.0.1:{port}"
        finally:
            nginx.stop()


def test_the_sidecar_check_believes_the_certificate_caller(
    checked: str, pki: Pki, keys: Keys
) -> None:
    spoof = {"x-caller": "svc:support", "x-guard-proxy-secret": "guess" * 8,
             "x-forwarded-for": "10.9.9.9", "forwarded": "for=10.9.9.9"}
    with _client(pki, "billing") as client:
        allowed = client.get(checked + "/customers/c-0001", headers={**spoof, **PURPOSE})
        refused = client.get(checked + "/customers/c-0001",
                             headers={**spoof, "x-purpose": "rights.request"})
    assert allowed.status_code == 200, allowed.text
    # The upstream sees the verified caller, neither the client's header nor the secret,
    # and the address nginx saw, not the client's claim.
    assert allowed.text.strip() == "caller=svc:billing xcaller= secret= xff=127.0.0.1 fwd="
    assert refused.status_code == 403


def test_the_sidecar_check_without_a_caller_name_is_401(checked: str, pki: Pki) -> None:
    with _client(pki, "odd") as client:
        response = client.get(checked + "/customers/c-0001",
                              headers={**PURPOSE, "x-caller": "svc:billing"})
    assert response.status_code == 401
