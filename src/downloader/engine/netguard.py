"""A requests session that only connects to public addresses, for untrusted callers' jobs.

A URL from the REST API could point at the worker's own network (loopback, private ranges,
link-local, a cloud metadata service). Checking the host name before the request is not
enough: a redirect or a DNS answer that changes between the check and the connect would slip
through. So the check sits in the connection itself: every connection, the first and every
redirect's, resolves the host, refuses the whole answer if any address is not public, and
connects to the address it checked.

An address is judged by what it reaches: an IPv6 address that embeds an IPv4 one (NAT64,
6to4, Teredo, IPv4-mapped or -compatible) is refused when the embedded address is not public.

Proxies: an untrusted job ignores the environment's `HTTP(S)_PROXY`/`ALL_PROXY` (the proxy
would connect on its behalf, past the check above) and uses only a proxy the operator names
for untrusted traffic (`DOWNLOADER_UNTRUSTED_PROXY`). Through that proxy, the target of the
request and of every redirect is resolved and checked before the request leaves; the proxy
resolves it again to connect, so a DNS answer that changes in between is the proxy's to catch.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.utils import select_proxy
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from downloader.engine.errors import ForbiddenAddressError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
"""The well-known NAT64 prefix (RFC 6052): the last 32 bits are the IPv4 address reached."""
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
"""Local-use NAT64 (RFC 8215): not globally reachable, and where the IPv4 address sits
depends on the operator's prefix length, so the whole range is refused."""
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
"""Deprecated IPv4-compatible addresses (RFC 4291): the last 32 bits are an IPv4 address."""
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
"""IPv4-translated addresses (SIIT, RFC 2765/6145): the last 32 bits are an IPv4 address."""


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to, by every embedding a stack may honour."""
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    embeds_low32 = any(address in net for net in (_NAT64, _IPV4_COMPATIBLE, _IPV4_TRANSLATED))
    embedded = [low32] if embeds_low32 else []
    if address.ipv4_mapped is not None:
        embedded.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        embedded.append(address.sixtofour)
    if address.teredo is not None:
        embedded.extend(address.teredo)  # (server, client), the client already un-obfuscated
    return embedded


def is_public(address: IPAddress) -> bool:
    """Whether an address, and every IPv4 address it embeds, is a public unicast address.

    Args:
        address: an IPv4 or IPv6 address.

    Returns:
        False for loopback, private, link-local, multicast and reserved addresses, and for
        an IPv6 address that embeds such an IPv4 one (NAT64, 6to4, Teredo, mapped).
    """
    if not address.is_global or address.is_multicast:
        return False
    if isinstance(address, ipaddress.IPv4Address):
        return True
    if address in _NAT64_LOCAL:
        return False
    return all(is_public(inner) for inner in _embedded_ipv4(address))


def public_address(host: str, port: int) -> tuple[socket.AddressFamily, tuple]:
    """Resolve a host once, refusing the whole answer if any address in it is not public.

    Args:
        host: a host name or address literal.
        port: the port to connect to.

    Returns:
        (family, socket address) of the first address, the one to connect to.

    Raises:
        ForbiddenAddressError: an address in the answer is not public.
        socket.gaierror: the name does not resolve.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0])
        if not is_public(address):
            raise ForbiddenAddressError(
                f"{host} resolves to {address}, a private, loopback or link-local address that "
                "jobs from untrusted callers may not reach; set "
                "DOWNLOADER_ALLOW_PRIVATE_NETWORKS=true to allow it"
            )
    family, *_, sockaddr = infos[0]
    return family, sockaddr


class _PublicOnly:
    """Mixed into urllib3 connections: connect only to the address that was checked."""

    host: str
    port: int
    timeout: object

    def _new_conn(self) -> socket.socket:
        family, sockaddr = public_address(self.host, self.port)
        sock = socket.socket(family, socket.SOCK_STREAM)
        if isinstance(self.timeout, int | float):
            sock.settimeout(self.timeout)
        try:
            sock.connect(sockaddr)
        except OSError:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


class _PublicHTTPConnection(_PublicOnly, HTTPConnection):
    pass


class _PublicHTTPSConnection(_PublicOnly, HTTPSConnection):
    pass


class _PublicHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PublicHTTPConnection


class _PublicHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PublicHTTPSConnection


_DEFAULT_PORTS = {"http": 80, "https": 443}


class PublicOnlyAdapter(HTTPAdapter):
    """Direct connections check their address as they connect; proxied requests check their
    target here, since the connection then goes to the proxy, not to the target."""

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _PublicHTTPPool,
            "https": _PublicHTTPSPool,
        }

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: object = None,
        verify: bool | str = True,
        cert: object = None,
        proxies: dict[str, str] | None = None,
    ) -> requests.Response:
        # Session.send calls this for the first request and for every redirect alike.
        if select_proxy(request.url or "", proxies):
            target = urlsplit(request.url)
            try:
                public_address(target.hostname or "", target.port or _DEFAULT_PORTS[target.scheme])
            except socket.gaierror as exc:  # as a direct connection's DNS failure reads
                raise requests.ConnectionError(
                    f"{target.hostname}: cannot resolve it to check it before the proxy ({exc})",
                    request=request,
                ) from exc
        return super().send(request, stream, timeout, verify, cert, proxies)


def public_only_session(proxy: str | None = None) -> requests.Session:
    """A session for untrusted jobs, whose every connection goes to public addresses only.

    No proxy but `proxy`, and no credentials or settings from the environment (`.netrc`
    would hand the operator's passwords to any host a caller names). The CA bundle the
    environment names still applies: it only decides whom to trust.

    Args:
        proxy: the operator's proxy for untrusted traffic (`DOWNLOADER_UNTRUSTED_PROXY`);
            each target is checked before a request goes to it. None: direct connections.

    Returns:
        The session; requests it sends raise `ForbiddenAddressError` for a target, or a
        redirect's, that is not public.
    """
    session = requests.Session()
    session.trust_env = False
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    session.verify = bundle or True
    if proxy:
        session.proxies = {"http": proxy, "https": proxy}
    adapter = PublicOnlyAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
