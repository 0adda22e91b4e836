"""Where a webhook may go (SPEC §7): URL rules and the address checks against SSRF.

A URL is checked when it is registered and its host is resolved and checked again right before
every connection; the connection is then made to the very address that passed (`Target.pin`),
so a DNS answer that changes between the check and the connect (rebinding) cannot reach an
internal service. Numeric hosts are parsed the way the C resolver reads them (`127.1`,
`2130706433`, `0x7f000001`, `0177.0.0.1`), so odd spellings of internal addresses are caught
without a DNS query.
"""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from batchrouter.errors import ValidationFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud instance-metadata services: blocked even when private targets are allowed.
METADATA_NETWORKS = [ipaddress.ip_network(n) for n in (
    "169.254.169.254/32",   # AWS, GCP, Azure, OpenStack, DigitalOcean…
    "169.254.170.2/32",     # AWS ECS task metadata
    "100.100.100.200/32",   # Alibaba Cloud
    "192.0.0.192/32",       # Oracle Cloud (legacy)
    "fd00:ec2::254/128",    # AWS over IPv6
)]
METADATA_HOSTS = {"metadata", "metadata.google.internal", "metadata.goog",
                  "instance-data", "instance-data.ec2.internal"}
CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
MAX_URL = 2048


class TargetRefused(ValidationFailed):
    """The URL or the address it resolves to is not an allowed webhook target."""

    code = "webhook_target_refused"


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str          # as written (IPv6 without brackets), used for Host and TLS SNI
    port: int
    path: str          # path and query


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver returns for host (IPv4 and IPv6)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


# Replaced in tests by a fake resolver (no test ever queries real DNS).
RESOLVER = system_resolver


def parse(url: str, *, allow_private: bool) -> Target:
    """Check the URL's shape: scheme, no credentials, a host, a port; no resolution yet."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise TargetRefused(f"The webhook URL must be a string of 1–{MAX_URL} characters.")
    if any(c.isspace() or ord(c) < 32 or c == "\\" for c in url):
        raise TargetRefused("The webhook URL contains whitespace, control characters or "
                            "backslashes.")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme != "https" and not (allow_private and scheme == "http"):
        raise TargetRefused("The webhook URL must use https://.")
    if "@" in parts.netloc or parts.username or parts.password:
        raise TargetRefused("Credentials are not allowed in the webhook URL; use the signing "
                            "secret to authenticate deliveries.")
    if parts.fragment:
        raise TargetRefused("The webhook URL must not contain a #fragment.")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise TargetRefused("The webhook URL has no host.")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise TargetRefused("The webhook URL has an invalid port.") from exc
    if host in METADATA_HOSTS:
        raise TargetRefused("Cloud metadata hosts are never allowed as webhook targets.")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(url=url, scheme=scheme, host=host, port=port, path=path)


def literal_address(host: str) -> IPAddress | None:
    """The address a numeric host stands for, in any spelling inet_aton accepts; else None."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries (mapped, NAT64, 6to4, Teredo, compatible)."""
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour:
        return ip.sixtofour
    if ip.teredo:
        return ip.teredo[1]
    if int(ip) >> 32 == 0 and int(ip) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(ip))
    return None


def refusal(ip: IPAddress, *, allow_private: bool) -> str | None:
    """Why this address may not be a webhook target, or None when it may."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "a scoped IPv6 address"
        inner = _embedded_ipv4(ip)
        if inner is not None:
            return refusal(inner, allow_private=allow_private)
    if any(ip in net for net in METADATA_NETWORKS):
        return "a cloud metadata address"
    if ip.is_unspecified or ip.is_multicast:
        return "not a unicast address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_global:
        return None
    if allow_private and (ip.is_loopback or ip.is_private or ip in CGNAT):
        return None
    return "a private, loopback or reserved address"


def addresses(target: Target, resolver=None) -> list[IPAddress]:
    """The addresses the host stands for: the literal itself, or every resolver answer."""
    literal = literal_address(target.host)
    if literal is not None:
        return [literal]
    try:
        answers = (resolver or RESOLVER)(target.host, target.port)
    except (OSError, UnicodeError) as exc:
        raise TargetRefused(f"The webhook host {target.host} does not resolve.") from exc
    parsed = []
    for answer in answers:
        try:
            parsed.append(ipaddress.ip_address(str(answer).split("%", 1)[0]))
        except ValueError:
            continue
    if not parsed:
        raise TargetRefused(f"The webhook host {target.host} does not resolve.")
    return parsed


def vet(target: Target, *, allow_private: bool, resolver=None) -> list[IPAddress]:
    """Every address of the host must be allowed (one bad answer refuses the whole host)."""
    found = addresses(target, resolver)
    for ip in found:
        why = refusal(ip, allow_private=allow_private)
        if why:
            raise TargetRefused(f"The webhook host {target.host} resolves to {why} ({ip}); "
                                "only public addresses are allowed.")
    return found


def check_url(url: str, *, allow_private: bool, resolver=None) -> Target:
    """Registration check: the URL's shape and every address its host resolves to now."""
    target = parse(url, allow_private=allow_private)
    vet(target, allow_private=allow_private, resolver=resolver)
    return target


def pin(url: str, *, allow_private: bool, resolver=None) -> tuple[Target, IPAddress]:
    """Connect-time check: resolve again, vet every answer, and return the one to dial."""
    target = parse(url, allow_private=allow_private)
    return target, vet(target, allow_private=allow_private, resolver=resolver)[0]
