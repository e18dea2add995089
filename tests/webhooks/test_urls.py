"""Webhook URL rules and the delivery-time guard, with real sockets, DNS and TLS on loopback."""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import AsyncIterator
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from maintlink.webhooks.urls import (
    ForbiddenAddressError,
    InvalidWebhookURL,
    SafeResolver,
    check_literal_host,
    is_forbidden_address,
    make_connector,
    make_ssl_context,
    parse_allowed_networks,
    validate_webhook_url,
)

# Every one of these reaches a non-public address (or cannot be a public endpoint at all).
FORBIDDEN = [
    # IPv4, written every way libc and browsers accept
    "https://127.0.0.1/",
    "https://2130706433/",  # decimal
    "https://0177.0.0.1/",  # octal
    "https://017700000001/",  # octal, one part
    "https://0x7f.0.0.1/",  # hex
    "https://0x7f000001/",  # hex, one part
    "https://0x7F.1/",  # hex, short form
    "https://127.1/",  # short form
    "https://127.0.1/",
    "https://127.0.0.1./",  # trailing dot
    "https://%31%32%37.0.0.1/",  # percent-encoded
    "https://\uff11\uff12\uff17\u3002\uff10\u3002\uff10\u3002\uff11/",  # full-width digits, dots
    "https://0/",  # 0.0.0.0 reaches this machine
    "https://0.0.0.0:8080/",
    "https://10.0.0.1/",
    "https://172.16.5.4/",
    "https://192.168.1.1/",
    "https://169.254.169.254/latest/meta-data/",  # cloud metadata
    "https://169.254.1.1/",  # link-local
    "https://100.64.0.1/",  # shared address space
    "https://100.100.100.200/",  # Alibaba metadata
    "https://198.18.0.1/",  # benchmarking
    "https://192.0.2.1/",  # documentation
    "https://203.0.113.9/",
    "https://224.0.0.1/",  # multicast
    "https://240.0.0.1/",  # reserved
    "https://255.255.255.255/",  # broadcast
    "https://192.0.0.8/",  # IETF protocol assignments
    # IPv6
    "https://[::1]/",
    "https://[0:0:0:0:0:0:0:1]/",
    "https://[::]/",
    "https://[::ffff:127.0.0.1]/",  # IPv4-mapped, dotted
    "https://[::ffff:7f00:1]/",  # IPv4-mapped, hex
    "https://[::ffff:a9fe:a9fe]/",  # IPv4-mapped metadata
    "https://[::127.0.0.1]/",  # IPv4-compatible
    "https://[::8.8.8.8]/",  # IPv4-compatible, even public: deprecated
    "https://[64:ff9b::127.0.0.1]/",  # NAT64 of loopback
    "https://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
    "https://[64:ff9b:1::1]/",  # local-use NAT64
    "https://[2002:7f00:1::1]/",  # 6to4 of 127.0.0.1
    "https://[2002:c0a8:101::]/",  # 6to4 of 192.168.1.1
    "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  # Teredo
    "https://[fe80::1]/",  # link-local
    "https://[fe80::1%25eth0]/",  # zone id
    "https://[fec0::1]/",  # site-local
    "https://[fc00::1]/",  # unique local
    "https://[fd00:ec2::254]/",  # AWS metadata, IPv6
    "https://[ff02::1]/",  # multicast
    "https://[2001:db8::1]/",  # documentation
    "https://[3fff::1]/",  # documentation (2024)
    "https://[2001:2::1]/",  # benchmarking
    "https://[100::1]/",  # discard-only
    "https://[5f00::1]/",  # outside 2000::/3
    # names that always mean this machine or the metadata service
    "https://localhost/",
    "https://LOCALHOST./",
    "https://api.localhost/",
    "https://%6c%6f%63%61%6c%68%6f%73%74/",  # percent-encoded localhost
    "https://metadata.google.internal/computeMetadata/v1/",
    "https://ip6-localhost/",
    "https://printer.local/",
    "https://svc.internal/",
    # shapes that are refused whatever the host
    "https://user:secret@example.com/",
    "https://user@example.com/",
    "https://example.com\\@127.0.0.1/",  # backslash: browsers and urllib disagree
    "https://example.com/#frag",
    "https://example.com:0/",
    "https://example.com:65536/",
    "https://example.com:http/",
    "https://[::1/",
    "https://1.2.3.256/",
    "https://1.2.3.4.5/",
    "https://exa mple.com/",
    "https://example.com/a\nb",
    "https://ex..ample.com/",
    "https://ex_ample!.com/",
    "https://::1/",
    "https:///path",
    "ftp://example.com/",
    "example.com/hook",
    "https://example.com/" + "a" * 2048,
]


def test_at_least_forty_forbidden_forms() -> None:
    assert len(set(FORBIDDEN)) == len(FORBIDDEN) >= 40


@pytest.mark.parametrize("url", FORBIDDEN)
def test_forbidden_urls_are_refused_with_a_reason(url: str) -> None:
    with pytest.raises(InvalidWebhookURL) as info:
        validate_webhook_url(url)
    reason = info.value.reason
    assert reason == str(info.value)
    assert reason[0].isupper() and reason.endswith(".")  # a sentence for people


@pytest.mark.parametrize(
    ("url", "expected_words"),
    [
        ("https://2130706433/", ["127.0.0.1", "loopback"]),
        ("https://[::ffff:7f00:1]/", ["IPv4-mapped", "127.0.0.1", "loopback"]),
        ("https://[64:ff9b::a00:1]/", ["NAT64", "10.0.0.1", "private"]),
        ("https://[2002:c0a8:101::]/", ["6to4", "192.168.1.1", "private"]),
        ("https://169.254.169.254/", ["metadata"]),
        ("https://100.64.0.1/", ["shared address space"]),
        ("https://198.18.0.1/", ["benchmarking"]),
        ("https://[fc00::1]/", ["unique local"]),
        ("https://[fe80::1%25eth0]/", ["zone"]),
        ("https://user:pw@example.com/", ["user name or password"]),
        ("http://example.com/", ["https"]),
        ("https://example.com/#x", ["fragment"]),
        ("https://localhost/", ["localhost", "loopback"]),
    ],
)
def test_reasons_name_the_problem(url: str, expected_words: list[str]) -> None:
    with pytest.raises(InvalidWebhookURL) as info:
        validate_webhook_url(url)
    for word in expected_words:
        assert word in info.value.reason


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("https://example.com/hooks/maintlink", "https://example.com/hooks/maintlink"),
        ("https://Hooks.Example.COM", "https://hooks.example.com/"),
        ("https://example.com:443/x?a=1&b=2", "https://example.com/x?a=1&b=2"),
        ("https://example.com:8443/x", "https://example.com:8443/x"),
        ("https://example.com:/x", "https://example.com/x"),
        ("https://example.com./x", "https://example.com/x"),
        ("  https://example.com/x  ", "https://example.com/x"),
        ("HTTPS://example.com/x", "https://example.com/x"),
        ("https://8.8.8.8/hook", "https://8.8.8.8/hook"),
        ("https://0x08.0x08.0x08.0x08/", "https://8.8.8.8/"),  # checked and stored canonical
        ("https://134744072/", "https://8.8.8.8/"),
        ("https://[2606:4700:4700:0:0:0:0:1111]/", "https://[2606:4700:4700::1111]/"),
        ("https://[::ffff:8.8.8.8]/", "https://[::ffff:808:808]/"),
        ("https://[64:ff9b::8.8.8.8]/", "https://[64:ff9b::808:808]/"),  # DNS64 of a public v4
        (
            "https://b\u00fccher.example/\u00e4?q=\u00f6",
            "https://xn--bcher-kva.example/%C3%A4?q=%C3%B6",
        ),
        ("https://my_receiver.example.com/a%20b", "https://my_receiver.example.com/a%20b"),
    ],
)
def test_public_urls_are_accepted_and_normalized(url: str, normalized: str) -> None:
    assert validate_webhook_url(url) == normalized
    assert validate_webhook_url(normalized) == normalized  # idempotent


def test_http_only_when_allowed() -> None:
    with pytest.raises(InvalidWebhookURL, match="https"):
        validate_webhook_url("http://example.com/")
    assert validate_webhook_url("http://example.com/", allow_http=True) == "http://example.com/"
    assert validate_webhook_url("http://example.com:80/", allow_http=True) == "http://example.com/"
    with pytest.raises(InvalidWebhookURL, match="user name or password"):
        validate_webhook_url("http://a:b@example.com/", allow_http=True)


def test_allowed_networks_relax_the_rules() -> None:
    loopback = parse_allowed_networks("127.0.0.0/8")
    assert validate_webhook_url("https://127.0.0.1:8443/", allowed_networks=loopback)
    assert validate_webhook_url("https://2130706433/", allowed_networks=loopback)
    assert validate_webhook_url("https://[::ffff:127.0.0.1]/", allowed_networks=loopback)
    assert validate_webhook_url("https://localhost:8443/x", allowed_networks=loopback) == (
        "https://localhost:8443/x"
    )
    with pytest.raises(InvalidWebhookURL):  # only what is listed
        validate_webhook_url("https://10.0.0.1/", allowed_networks=loopback)
    docker = parse_allowed_networks("172.16.0.0/12, fd00::/8")
    assert validate_webhook_url("http://172.18.0.5:8000/", allow_http=True, allowed_networks=docker)
    assert validate_webhook_url("https://[fd12::5]/", allowed_networks=docker)
    assert validate_webhook_url("https://receiver.internal/", allowed_networks=docker)
    # Userinfo and the rest of the shape rules are never relaxed.
    with pytest.raises(InvalidWebhookURL):
        validate_webhook_url("https://u:p@127.0.0.1/", allowed_networks=loopback)


def test_metadata_stays_forbidden_inside_a_broad_allowed_network() -> None:
    link_local = parse_allowed_networks("169.254.0.0/16")
    assert validate_webhook_url("https://169.254.10.1/", allowed_networks=link_local)
    with pytest.raises(InvalidWebhookURL, match="metadata"):
        validate_webhook_url("https://169.254.169.254/", allowed_networks=link_local)
    with pytest.raises(InvalidWebhookURL, match="metadata"):
        validate_webhook_url("https://metadata.google.internal/", allowed_networks=link_local)
    exact = parse_allowed_networks("169.254.169.254")
    assert validate_webhook_url("https://169.254.169.254/", allowed_networks=exact)
    everything = parse_allowed_networks("0.0.0.0/0 ::/0")
    assert is_forbidden_address(IPv6Address("fd00:ec2::254"), everything) is not None
    assert is_forbidden_address(IPv4Address("10.1.2.3"), everything) is None


@pytest.mark.parametrize(
    ("address", "word"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.31.255.255", "private"),
        ("192.168.0.1", "private"),
        ("169.254.0.1", "link-local"),
        ("169.254.169.254", "metadata"),
        ("168.63.129.16", "Azure"),
        ("100.127.255.254", "shared address space"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "this network"),
        ("198.19.255.255", "benchmarking"),
        ("198.51.100.1", "documentation"),
        ("239.255.255.250", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("250.1.1.1", "reserved"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::abcd", "link-local"),
        ("fec0::1", "site-local"),
        ("fd00::1", "unique local"),
        ("fd00:ec2::254", "metadata"),
        ("ff05::2", "multicast"),
        ("2001:db8:1::1", "documentation"),
        ("2001:2::5", "benchmarking"),
        ("2001:0:5ef5:79fd::1", "Teredo"),
        ("::ffff:10.0.0.1", "IPv4-mapped"),
        ("64:ff9b::c0a8:1", "NAT64"),
        ("2002:a00:1::1", "6to4"),
        ("::a00:1", "IPv4-compatible"),
        ("4000::1", "global unicast"),
        ("fe80::1%eth0", "link-local"),
    ],
)
def test_is_forbidden_address_reasons(address: str, word: str) -> None:
    reason = is_forbidden_address(ip_address(address))
    assert reason is not None and word in reason


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.215.14",
        "2606:4700:4700::1111",
        "2a00:1450:4001::200e",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
        "9.9.9.9",
    ],
)
def test_public_addresses_are_permitted(address: str) -> None:
    assert is_forbidden_address(ip_address(address)) is None


def test_parse_allowed_networks() -> None:
    assert parse_allowed_networks("") == []
    assert parse_allowed_networks(" 10.0.0.0/8,  fd00::/8 127.0.0.1 ") == [
        ip_network("10.0.0.0/8"),
        ip_network("fd00::/8"),
        ip_network("127.0.0.1/32"),
    ]
    assert parse_allowed_networks("10.1.2.3/8") == [ip_network("10.0.0.0/8")]
    with pytest.raises(ValueError, match=re.escape("'10.0.0.0/33'")):
        parse_allowed_networks("10.0.0.0/8,10.0.0.0/33")
    with pytest.raises(ValueError, match=re.escape("'example.com'")):
        parse_allowed_networks("example.com")


def test_check_literal_host() -> None:
    for url in [
        "https://127.0.0.1/",
        "https://[::1]:8443/",
        "https://[::ffff:10.0.0.1]/",
        "https://2130706433/",
        "https://0x7f.1/",
    ]:
        with pytest.raises(ForbiddenAddressError) as info:
            check_literal_host(url)
        assert info.value.reason and info.value.address in str(info.value)
    check_literal_host("https://example.com/")  # names are the resolver's job
    check_literal_host("https://8.8.8.8/")
    check_literal_host("https://127.0.0.1/", parse_allowed_networks("127.0.0.0/8"))


# --- the resolver on its own --------------------------------------------------------------------


class ScriptedResolver(AbstractResolver):
    """Answers from a script: stands in for a DNS server that rebinds between lookups."""

    def __init__(self, answers: list[list[str]]) -> None:
        self.answers = answers

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = self.answers.pop(0)
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for a in addresses
        ]

    async def close(self) -> None:
        pass


async def test_safe_resolver_drops_forbidden_addresses_and_catches_rebinding() -> None:
    inner = ScriptedResolver(
        [
            ["93.184.215.14", "10.0.0.7", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "::1"],
            ["127.0.0.1"],
            ["169.254.169.254", "fd00:ec2::254"],
        ]
    )
    resolver = SafeResolver(resolver=inner)
    first = await resolver.resolve("rebind.example", 443, socket.AF_UNSPEC)
    assert [r["host"] for r in first] == ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]
    with pytest.raises(ForbiddenAddressError) as info:  # the same name, a minute later
        await resolver.resolve("rebind.example", 443, socket.AF_UNSPEC)
    assert info.value.address == "127.0.0.1" and "loopback" in info.value.reason
    assert "rebind.example" in str(info.value) and "127.0.0.1" in str(info.value)
    with pytest.raises(ForbiddenAddressError) as info:
        await resolver.resolve("rebind.example", 443, socket.AF_UNSPEC)
    assert [a for a, _ in info.value.refused] == ["169.254.169.254", "fd00:ec2::254"]
    await resolver.close()


# --- real requests through the connector ---------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


async def _serve(ca: trustme.CA) -> tuple[web.AppRunner, int]:
    async def hook(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port


@pytest.fixture
async def https_port(ca: trustme.CA) -> AsyncIterator[int]:
    runner, port = await _serve(ca)
    yield port
    await runner.cleanup()


@pytest.fixture
async def foreign_https_port() -> AsyncIterator[int]:
    runner, port = await _serve(trustme.CA())  # a certificate our CA file does not vouch for
    yield port
    await runner.cleanup()


async def _post(url: str, connector: aiohttp.TCPConnector) -> int:
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async with session.post(url, data=b"{}", allow_redirects=False) as response:
            return response.status


async def test_name_resolving_to_loopback_is_refused(https_port: int, ca_file: str) -> None:
    connector = make_connector(ssl_context=make_ssl_context(ca_file))
    with pytest.raises(aiohttp.ClientConnectorError) as info:
        await _post(f"https://localhost:{https_port}/hook", connector)
    error = info.value.os_error
    assert isinstance(error, ForbiddenAddressError)
    assert error.host == "localhost" and "loopback" in error.reason
    assert "loopback" in str(info.value)


async def test_ip_literal_is_refused_although_aiohttp_skips_the_resolver(
    https_port: int, ca_file: str
) -> None:
    connector = make_connector(ssl_context=make_ssl_context(ca_file))
    with pytest.raises(aiohttp.ClientConnectorError) as info:
        await _post(f"https://127.0.0.1:{https_port}/hook", connector)
    assert isinstance(info.value.os_error, ForbiddenAddressError)
    assert info.value.os_error.address == "127.0.0.1"


async def test_allowed_loopback_reaches_a_real_https_server(https_port: int, ca_file: str) -> None:
    allowed = parse_allowed_networks("127.0.0.0/8")
    for host in ("localhost", "127.0.0.1"):
        connector = make_connector(allowed_networks=allowed, ssl_context=make_ssl_context(ca_file))
        assert await _post(f"https://{host}:{https_port}/hook", connector) == 200


async def test_certificate_from_another_ca_fails(foreign_https_port: int, ca_file: str) -> None:
    allowed = parse_allowed_networks("127.0.0.0/8")
    connector = make_connector(allowed_networks=allowed, ssl_context=make_ssl_context(ca_file))
    with pytest.raises((aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError)):
        await _post(f"https://localhost:{foreign_https_port}/hook", connector)


async def test_system_trust_store_alone_does_not_trust_a_private_ca(https_port: int) -> None:
    allowed = parse_allowed_networks("127.0.0.0/8")
    connector = make_connector(allowed_networks=allowed)  # default: system CAs only
    with pytest.raises((aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError)):
        await _post(f"https://localhost:{https_port}/hook", connector)


def test_make_ssl_context_verifies_and_reports_bad_bundles(tmp_path: Path) -> None:
    context = make_ssl_context(None)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    with pytest.raises(ValueError, match="CA bundle"):
        make_ssl_context(str(tmp_path / "missing.pem"))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ValueError, match="CA bundle"):
        make_ssl_context(str(junk))
