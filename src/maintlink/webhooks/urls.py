"""Webhook endpoint URLs that cannot be turned against us (SSRF protection).

Two checks, at two moments:

* ``validate_webhook_url`` when an endpoint is saved: scheme, shape, and any host that *is* an
  address, in every notation a browser or ``inet_aton`` accepts (``2130706433``, ``0x7f.1``,
  ``[::ffff:7f00:1]``, full-width digits ...), plus names that always mean "this machine".
  It returns the URL in a canonical form, so what is stored is exactly what was checked.
* ``make_connector`` at delivery time, against DNS rebinding: a name that resolved to a public
  address yesterday may resolve to 127.0.0.1 today. ``SafeResolver`` drops every forbidden
  address after resolution, and a socket factory checks the very address each socket is about to
  connect to, so the check and the connection cannot disagree. The socket factory also covers IP
  literal hosts, which aiohttp connects to without asking the resolver.

Delivery must also send requests with ``allow_redirects=False`` (a redirect is a failure, and a
``Location`` header is not checked here) and without proxies from the environment.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import string
from collections.abc import Iterable, Sequence
from errno import EPERM
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any
from urllib.parse import quote, unquote_to_bytes, urlsplit

import aiohttp
from aiohappyeyeballs import AddrInfoType, SocketFactoryType  # aiohttp's own dependency
from aiohttp.abc import AbstractResolver, ResolveResult

__all__ = [
    "MAX_URL_LENGTH",
    "ForbiddenAddressError",
    "InvalidWebhookURL",
    "SafeResolver",
    "check_literal_host",
    "is_forbidden_address",
    "make_connector",
    "make_ssl_context",
    "parse_allowed_networks",
    "validate_webhook_url",
]

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

MAX_URL_LENGTH = 2048


class InvalidWebhookURL(ValueError):
    """A webhook URL was refused; ``reason`` is a sentence fit to show the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ForbiddenAddressError(OSError):
    """A delivery would have connected to a forbidden address (after DNS, or an IP literal)."""

    def __init__(
        self, host: str, refused: Sequence[tuple[str, str]], *, resolved: bool = True
    ) -> None:
        self.host = host
        self.refused = list(refused)  # (address, reason) for every address that was dropped
        self.address, self.reason = self.refused[0]
        listed = "; ".join(f"{address} is {_article(reason)}" for address, reason in self.refused)
        if resolved and self.address != host:
            message = (
                f"refusing to connect to {host}: it resolves only to forbidden addresses ({listed})"
            )
        else:
            message = f"refusing to connect to {self.address}: it is {_article(self.reason)}"
        # errno + strerror so aiohttp's ClientConnectorError shows the sentence, not "None".
        super().__init__(EPERM, message)

    def __str__(self) -> str:
        return str(self.strerror)


# --- which addresses are forbidden -------------------------------------------------------------

# Cloud metadata and platform endpoints: refused even inside an allowed network, unless that
# allowed network is exactly the one address (opening 169.254.0.0/16 must not expose credentials).
_METADATA: dict[IPAddress, str] = {
    IPv4Address("169.254.169.254"): "cloud metadata service address (AWS, GCP, Azure, OCI ...)",
    IPv4Address("169.254.170.2"): "cloud metadata service address (AWS ECS task credentials)",
    IPv4Address("169.254.170.23"): "cloud metadata service address (AWS EKS pod identity)",
    IPv4Address("100.100.100.200"): "cloud metadata service address (Alibaba Cloud)",
    IPv4Address("168.63.129.16"): "cloud platform address (Azure WireServer)",
    IPv6Address("fd00:ec2::254"): "cloud metadata service address (AWS, IPv6)",
    IPv6Address("fd00:ec2::23"): "cloud metadata service address (AWS EKS pod identity, IPv6)",
}


def _rules(pairs: Iterable[tuple[str, str]]) -> tuple[tuple[Any, str], ...]:
    return tuple((ipaddress.ip_network(net), reason) for net, reason in pairs)


# Most specific first; explicit so the answer does not depend on the Python patch release
# (3.11's ipaddress calls fec0::/10, 3fff::/20 and 64:ff9b::7f00:1 "global").
_IPV4_RULES: tuple[tuple[IPv4Network, str], ...] = _rules(
    [
        ("0.0.0.0/32", "unspecified address (0.0.0.0 reaches this machine)"),
        ("0.0.0.0/8", "'this network' address (0.0.0.0/8)"),
        ("10.0.0.0/8", "private address (10.0.0.0/8)"),
        ("100.64.0.0/10", "shared address space address (carrier-grade NAT, 100.64.0.0/10)"),
        ("127.0.0.0/8", "loopback address (127.0.0.0/8)"),
        ("169.254.0.0/16", "link-local address (169.254.0.0/16)"),
        ("172.16.0.0/12", "private address (172.16.0.0/12)"),
        ("192.0.0.0/24", "IETF protocol assignment address (192.0.0.0/24)"),
        ("192.0.2.0/24", "documentation address (192.0.2.0/24)"),
        ("192.88.99.0/24", "reserved address (deprecated 6to4 relay anycast, 192.88.99.0/24)"),
        ("192.168.0.0/16", "private address (192.168.0.0/16)"),
        ("198.18.0.0/15", "benchmarking address (198.18.0.0/15)"),
        ("198.51.100.0/24", "documentation address (198.51.100.0/24)"),
        ("203.0.113.0/24", "documentation address (203.0.113.0/24)"),
        ("224.0.0.0/4", "multicast address (224.0.0.0/4)"),
        ("255.255.255.255/32", "broadcast address (255.255.255.255)"),
        ("240.0.0.0/4", "reserved address (240.0.0.0/4)"),
    ]
)

_IPV6_RULES: tuple[tuple[IPv6Network, str], ...] = _rules(
    [
        ("::/128", "unspecified address (:: reaches this machine)"),
        ("::1/128", "loopback address (::1)"),
        ("fe80::/10", "link-local address (fe80::/10)"),
        ("fec0::/10", "site-local address (fec0::/10, deprecated)"),
        ("fc00::/7", "unique local address (fc00::/7)"),
        ("ff00::/8", "multicast address (ff00::/8)"),
        ("64:ff9b:1::/48", "local-use NAT64 address (64:ff9b:1::/48)"),
        ("100::/64", "discard-only address (100::/64)"),
        ("2001:db8::/32", "documentation address (2001:db8::/32)"),
        ("3fff::/20", "documentation address (3fff::/20)"),
        ("2001:2::/48", "benchmarking address (2001:2::/48)"),
        ("2001:10::/28", "ORCHID address (2001:10::/28, deprecated)"),
        ("2001:20::/28", "ORCHIDv2 address (2001:20::/28)"),
        ("2001::/23", "IETF protocol assignment address (2001::/23)"),
    ]
)

_GLOBAL_UNICAST_V6 = IPv6Network("2000::/3")
_NAT64 = IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = IPv6Network("2002::/16")
_IPV4_COMPATIBLE = IPv6Network("::/96")


def _article(phrase: str) -> str:
    # "an IPv4-mapped ...", "a unique local ...": reasons read as sentences.
    first = next((ch for ch in phrase if ch.isalnum()), "")
    vowel = first.lower() in "aeio" or (first == "u" and not phrase.startswith("uni"))
    return f"{'an' if vowel else 'a'} {phrase}"


def _contains(networks: Iterable[IPNetwork], ip: IPAddress) -> bool:
    # `in` across IP versions is simply False, which is what we want.
    return any(ip in net for net in networks)


def is_forbidden_address(
    ip: IPv4Address | IPv6Address, allowed_networks: Sequence[IPNetwork] = ()
) -> str | None:
    """Why a webhook must not be sent to ``ip`` (a noun phrase), or ``None`` if it may.

    Only public unicast addresses are permitted. ``allowed_networks`` (the operator's setting
    ``MAINTLINK_WEBHOOK_ALLOWED_NETWORKS``) permits addresses despite these rules, except cloud
    metadata addresses, which must be listed on their own (as a /32 or /128) to be reachable.
    IPv4-mapped and NAT64 (64:ff9b::/96) addresses are judged by the IPv4 address they carry;
    6to4 is refused when the one it carries is; IPv4-compatible and Teredo are always refused.
    """
    if isinstance(ip, IPv6Address) and ip.scope_id is not None:
        ip = IPv6Address(int(ip))  # the zone does not change what the address is
    metadata = _METADATA.get(ip)
    if metadata is not None:
        if any(net.num_addresses == 1 and ip in net for net in allowed_networks):
            return None
        return metadata
    if _contains(allowed_networks, ip):
        return None
    if isinstance(ip, IPv4Address):
        return _ipv4_reason(ip)
    return _ipv6_reason(ip, allowed_networks)


def _ipv4_reason(ip: IPv4Address) -> str | None:
    for net, reason in _IPV4_RULES:
        if ip in net:
            return reason
    if not ip.is_global:  # whatever the standard library learns about later
        return "address that is not globally reachable"
    return None


def _ipv6_reason(ip: IPv6Address, allowed: Sequence[IPNetwork]) -> str | None:
    # Forms that the kernel or a translator turns into an IPv4 connection: judge that address.
    embedded: IPv4Address | None = ip.ipv4_mapped
    kind = "IPv4-mapped address"
    if embedded is None and ip in _NAT64:
        embedded, kind = IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64 address"
    if embedded is not None:
        reason = is_forbidden_address(embedded, allowed)
        return None if reason is None else f"{kind} of {embedded}, which is {_article(reason)}"
    if ip.teredo is not None:
        _server, client = ip.teredo
        return f"Teredo tunnel address (2001::/32, client {client})"
    if ip in _SIX_TO_FOUR:
        assert ip.sixtofour is not None
        reason = is_forbidden_address(ip.sixtofour, allowed)
        if reason is not None:
            return f"6to4 address embedding {ip.sixtofour}, which is {_article(reason)}"
    for net, reason in _IPV6_RULES:
        if ip in net:
            return reason
    if ip in _IPV4_COMPATIBLE:
        return f"IPv4-compatible address (::/96, deprecated) embedding {IPv4Address(int(ip))}"
    if ip not in _GLOBAL_UNICAST_V6:
        return "address outside IPv6 global unicast space (2000::/3)"
    if not ip.is_global:
        return "address that is not globally reachable"
    return None


def parse_allowed_networks(value: str) -> list[IPv4Network | IPv6Network]:
    """Parse ``MAINTLINK_WEBHOOK_ALLOWED_NETWORKS``: CIDRs or addresses, comma or space separated.

    Host bits are tolerated (``10.1.2.3/8`` means ``10.0.0.0/8``); anything else is a
    ``ValueError`` naming the bad item.
    """
    networks: list[IPv4Network | IPv6Network] = []
    for item in value.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(
                f"MAINTLINK_WEBHOOK_ALLOWED_NETWORKS: {item!r} is not an IP network such as "
                "10.0.0.0/8 or fd00::/8"
            ) from None
    return networks


# --- names ------------------------------------------------------------------------------------

_LOOPBACK = (IPv4Address("127.0.0.1"), IPv6Address("::1"))
_METADATA_V4 = (IPv4Address("169.254.169.254"),)

# Names that always mean one address, judged as that address (so an allowed network covers them).
_FIXED_NAMES: dict[str, tuple[IPAddress, ...]] = {
    "localhost": _LOOPBACK,
    "localhost.localdomain": _LOOPBACK,
    "ip6-localhost": (IPv6Address("::1"),),
    "ip6-loopback": (IPv6Address("::1"),),
    "metadata": _METADATA_V4,
    "metadata.google.internal": _METADATA_V4,
    "metadata.goog": _METADATA_V4,
    "instance-data": _METADATA_V4,
    "instance-data.ec2.internal": _METADATA_V4,
}

# Special-use and private-use suffixes: never public. Permitted only when the operator has
# allowed some networks (a receiver on a private network is then expected); the resolver still
# checks every address these resolve to.
_PRIVATE_SUFFIXES = (".internal", ".local", ".localdomain", ".home.arpa", ".intranet", ".corp")

_NAME_CHARS = frozenset(string.ascii_lowercase + string.digits + "-_")
_HEX_DIGITS = frozenset(string.hexdigits)


def _ipv4_number(part: str) -> int | None:
    # One part of a WHATWG / inet_aton IPv4 address: 0x-hex, 0-octal or decimal.
    if part[:2] in ("0x", "0X"):
        digits, base = part[2:], 16
        if digits and not set(digits) <= _HEX_DIGITS:
            return None
    elif len(part) > 1 and part[0] == "0":
        digits, base = part[1:], 8
        if not set(digits) <= set("01234567"):
            return None
    else:
        digits, base = part, 10
        if not (digits.isascii() and digits.isdigit()):
            return None
    return int(digits, base) if digits else 0


def _ends_in_number(labels: list[str]) -> bool:
    last = labels[-1]
    if last.isascii() and last.isdigit():
        return True
    return last[:2] in ("0x", "0X") and _ipv4_number(last) is not None


def _parse_ipv4(labels: list[str]) -> IPv4Address | None:
    """The WHATWG URL host parser's IPv4 rules (``127.1``, ``0x7f.1``, ``2130706433`` ...)."""
    if len(labels) > 4:
        return None
    numbers = [_ipv4_number(label) for label in labels]
    if any(n is None for n in numbers):
        return None
    values: list[int] = numbers  # type: ignore[assignment]
    *head, last = values
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(values)):
        return None
    address = last
    for i, n in enumerate(head):
        address += n * 256 ** (3 - i)
    return IPv4Address(address)


def _public_reason(addresses: Sequence[IPAddress], allowed: Sequence[IPNetwork]) -> str | None:
    # A name with several fixed addresses passes if any of them is allowed.
    reasons = [is_forbidden_address(ip, allowed) for ip in addresses]
    return None if any(r is None for r in reasons) else reasons[0]


# --- URL validation ---------------------------------------------------------------------------


def validate_webhook_url(
    url: str,
    *,
    allow_http: bool = False,
    allowed_networks: Sequence[IPv4Network | IPv6Network] = (),
) -> str:
    """Check a webhook endpoint URL and return it in canonical form, or raise ``InvalidWebhookURL``.

    Rules: ``https://`` (``http://`` only with ``allow_http``); a host; no user name or password;
    no fragment; port 1-65535; at most 2048 characters; no spaces, control characters or
    backslashes. A host written as an address, in any notation, must be a public unicast address
    (see ``is_forbidden_address``); ``localhost``, ``*.localhost`` and metadata names are judged
    as the addresses they stand for. The returned URL has a lower-case ASCII (IDNA) host, IPv4 in
    dotted-quad form, IPv6 compressed in brackets, no default port, and a path of at least ``/``.
    Names are not resolved here: the delivery connector checks what they resolve to.
    """
    if not isinstance(url, str):
        raise InvalidWebhookURL("The webhook URL must be text.")
    url = url.strip()
    if not url:
        raise InvalidWebhookURL("The webhook URL is empty.")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidWebhookURL(f"The webhook URL is longer than {MAX_URL_LENGTH} characters.")
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise InvalidWebhookURL("The webhook URL contains spaces or control characters.")
    if "\\" in url:
        # Browsers read "\" as "/", urllib does not: the two would see different hosts.
        raise InvalidWebhookURL("The webhook URL contains a backslash.")

    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("https", "http"):
        raise InvalidWebhookURL("The webhook URL must start with https://.")
    if scheme == "http" and not allow_http:
        raise InvalidWebhookURL("The webhook URL must use https://; plain http is not allowed.")
    if "#" in url:
        raise InvalidWebhookURL("The webhook URL must not contain a fragment (#...).")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise InvalidWebhookURL("The webhook URL is not a valid URL.") from None
    netloc = parts.netloc
    if "@" in netloc:
        raise InvalidWebhookURL("The webhook URL must not contain a user name or password.")

    raw_host, port = _split_netloc(netloc)
    host = _canonical_host(raw_host, allowed_networks)

    default_port = 443 if scheme == "https" else 80
    port_text = f":{port}" if port is not None and port != default_port else ""
    # Non-ASCII in the path or query is percent-encoded; existing escapes are kept as they are.
    path = quote(parts.path, safe="/%:@!$&'()*+,;=-._~") or "/"
    query = quote(parts.query, safe="/?%:@!$&'()*+,;=-._~")
    normalized = f"{scheme}://{host}{port_text}{path}" + (f"?{query}" if query else "")
    if len(normalized) > MAX_URL_LENGTH:
        raise InvalidWebhookURL(f"The webhook URL is longer than {MAX_URL_LENGTH} characters.")
    return normalized


def _split_netloc(netloc: str) -> tuple[str, int | None]:
    if not netloc:
        raise InvalidWebhookURL("The webhook URL must have a host name.")
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise InvalidWebhookURL("The webhook URL has an unclosed '[' in its host.")
        host, rest = netloc[: end + 1], netloc[end + 1 :]
        if rest and not rest.startswith(":"):
            raise InvalidWebhookURL("The webhook URL has text after its IPv6 address.")
        port_text = rest[1:] if rest else None
    else:
        if netloc.count(":") > 1:
            raise InvalidWebhookURL("IPv6 addresses in a webhook URL must be in [brackets].")
        host, colon, port_text_or_empty = netloc.partition(":")
        port_text = port_text_or_empty if colon else None
    if not port_text:  # absent, or "host:" which browsers read as the default port
        return host, None
    if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5:
        raise InvalidWebhookURL("The port of the webhook URL must be a number from 1 to 65535.")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise InvalidWebhookURL("The port of the webhook URL must be a number from 1 to 65535.")
    return host, port


def _canonical_host(raw: str, allowed: Sequence[IPNetwork]) -> str:
    if raw.startswith("["):
        inner = raw[1:-1]
        if "%" in inner:
            raise InvalidWebhookURL("The webhook URL must not use an IPv6 zone identifier (%...).")
        try:
            ip6 = IPv6Address(inner)
        except ValueError:
            raise InvalidWebhookURL(f"The host {raw} is not a valid IPv6 address.") from None
        _refuse_address(raw, ip6, allowed)
        return f"[{ip6.compressed}]"

    host = raw
    if "%" in host:
        # Browsers percent-decode hosts: %31%32%37.0.0.1 is 127.0.0.1.
        try:
            host = unquote_to_bytes(host).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidWebhookURL("The host of the webhook URL is not valid text.") from None
    if not host:
        raise InvalidWebhookURL("The webhook URL must have a host name.")
    if host.isascii():
        host = host.lower()
    else:
        # IDNA maps what browsers map: full-width digits and dots (U+FF11, U+3002), case ...
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise InvalidWebhookURL(
                f"The host {raw!r} of the webhook URL is not a valid domain name."
            ) from None
    if host.endswith("."):
        host = host[:-1]  # one trailing dot is the fully-qualified form of the same name
    labels = host.split(".")
    if not host or any(not label for label in labels):
        raise InvalidWebhookURL(f"The host {raw!r} of the webhook URL has an empty label.")

    if _ends_in_number(labels):
        ip4 = _parse_ipv4(labels)
        if ip4 is None:
            raise InvalidWebhookURL(f"The host {raw!r} of the webhook URL is not a valid address.")
        _refuse_address(raw, ip4, allowed)
        return str(ip4)

    if len(host) > 253 or any(len(label) > 63 or not set(label) <= _NAME_CHARS for label in labels):
        raise InvalidWebhookURL(f"The host {raw!r} of the webhook URL is not a valid domain name.")
    fixed = _FIXED_NAMES.get(host)
    if fixed is None and host.endswith(".localhost"):
        fixed = _LOOPBACK
    if fixed is not None:
        reason = _public_reason(fixed, allowed)
        if reason is not None:
            raise InvalidWebhookURL(
                f"The host {host!r} always means {fixed[0]}, which is {_article(reason)}; "
                "webhooks can only be sent to public addresses."
            )
    elif not allowed and host.endswith(_PRIVATE_SUFFIXES):
        raise InvalidWebhookURL(
            f"The host {host!r} is a private-use name that cannot be reached from the internet; "
            "webhooks can only be sent to public addresses."
        )
    return host


def _refuse_address(written: str, ip: IPAddress, allowed: Sequence[IPNetwork]) -> None:
    reason = is_forbidden_address(ip, allowed)
    if reason is None:
        return
    shown = str(ip) if written.strip("[]").lower() == str(ip) else f"{written} ({ip})"
    raise InvalidWebhookURL(
        f"The host {shown} is {_article(reason)}; webhooks can only be sent to public addresses."
    )


# --- delivery-time guard ----------------------------------------------------------------------


def check_literal_host(
    url: str, allowed_networks: Sequence[IPv4Network | IPv6Network] = ()
) -> None:
    """Raise ``ForbiddenAddressError`` if ``url``'s host is an IP literal that is forbidden.

    aiohttp does not ask the resolver about IP literal hosts, so ``SafeResolver`` alone would not
    see them. The connector from ``make_connector`` already checks every socket address; this
    helper lets a caller refuse such a URL before any request is built. Names are left alone.
    """
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return  # not a URL aiohttp would send either
    if not host:
        return
    written = host
    try:
        ip: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        labels = host.rstrip(".").split(".")
        ip = _parse_ipv4(labels) if host.rstrip(".") and _ends_in_number(labels) else None
    if ip is None:
        return
    reason = is_forbidden_address(ip, allowed_networks)
    if reason is not None:
        raise ForbiddenAddressError(written, [(str(ip), reason)], resolved=False)


class SafeResolver(AbstractResolver):
    """Resolve with another resolver, then keep only permitted addresses.

    Raises ``ForbiddenAddressError`` (an ``OSError``, which aiohttp wraps in
    ``ClientConnectorDNSError`` with it as ``os_error``) when every address is forbidden, so a
    name that rebinds to a private address fails with a clear reason instead of connecting.
    """

    def __init__(
        self,
        allowed_networks: Sequence[IPv4Network | IPv6Network] = (),
        *,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._allowed = tuple(allowed_networks)
        # ThreadedResolver: the system's getaddrinfo, so /etc/hosts and search domains apply,
        # exactly as they would for any other client on this machine.
        self._resolver = resolver if resolver is not None else aiohttp.ThreadedResolver()
        self._owns_resolver = resolver is None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        permitted: list[ResolveResult] = []
        refused: list[tuple[str, str]] = []
        for result in results:
            try:
                ip = ipaddress.ip_address(result["host"])
            except ValueError:
                refused.append((result["host"], "result that is not an IP address"))
                continue
            reason = is_forbidden_address(ip, self._allowed)
            if reason is None:
                permitted.append(result)
            else:
                refused.append((str(ip), reason))
        if not permitted:
            if not refused:
                raise OSError(f"{host} did not resolve to any address")
            raise ForbiddenAddressError(host, refused)
        return permitted

    async def close(self) -> None:
        if self._owns_resolver:
            await self._resolver.close()


def _guarded_socket_factory(allowed: Sequence[IPNetwork]) -> SocketFactoryType:
    def socket_factory(addr_info: AddrInfoType) -> socket.socket:
        # The last word: this exact address is what the socket will connect to.
        family, type_, proto, _canonname, sockaddr = addr_info
        host = str(sockaddr[0])
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ForbiddenAddressError(
                host, [(host, "socket address that is not an IP address")], resolved=False
            ) from None
        reason = is_forbidden_address(ip, allowed)
        if reason is not None:
            raise ForbiddenAddressError(host, [(str(ip), reason)], resolved=False)
        return socket.socket(family=family, type=type_, proto=proto)

    return socket_factory


def make_connector(
    *,
    allowed_networks: Sequence[IPv4Network | IPv6Network] = (),
    ssl_context: ssl.SSLContext | None = None,
    limit: int = 100,
    limit_per_host: int = 10,
    ttl_dns_cache: int | None = 10,
    resolver: AbstractResolver | None = None,
) -> aiohttp.TCPConnector:
    """An aiohttp connector for webhook delivery that only reaches permitted addresses.

    * names go through ``SafeResolver``: forbidden addresses are dropped after resolution;
    * every socket, IP literal hosts included (aiohttp skips the resolver for those), is checked
      by a socket factory against the address it is about to connect to, so a check and its
      connection always concern the same address;
    * TLS is always verified, with ``ssl_context`` or ``make_ssl_context(None)``.

    Must be called with an event loop running. ``resolver`` (default: ``ThreadedResolver``) is
    wrapped, and is not closed by the connector.
    """
    allowed = tuple(allowed_networks)
    return aiohttp.TCPConnector(
        resolver=SafeResolver(allowed, resolver=resolver),
        socket_factory=_guarded_socket_factory(allowed),
        ssl=ssl_context if ssl_context is not None else make_ssl_context(None),
        limit=limit,
        limit_per_host=limit_per_host,
        ttl_dns_cache=ttl_dns_cache,
    )


def make_ssl_context(ca_bundle: str | None = None) -> ssl.SSLContext:
    """A verifying TLS client context: the system trust store, plus ``ca_bundle`` if given.

    ``ca_bundle`` is a PEM file (or a directory of hashed certificates) of extra CAs, for
    receivers behind a private CA. Certificate and host name checks cannot be turned off here.
    """
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_bundle:
        try:
            if os.path.isdir(ca_bundle):
                context.load_verify_locations(capath=ca_bundle)
            else:
                context.load_verify_locations(cafile=ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load the CA bundle {ca_bundle!r}: {exc}") from exc
    return context
