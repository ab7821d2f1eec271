"""Which addresses a callback may connect to: the address filter, and the resolver it checks.

A client names the callback's URL, so a callback must never become a way into the operator's own
network: every address its host resolves to is checked, and one refused address refuses them all
(a name that resolves to a public and a private address would otherwise reach the private one on
some attempts). Refused unless CALLBACK_ALLOWED_NETWORKS lists them: loopback, private (RFC 1918,
unique local IPv6), link-local, the cloud metadata addresses, shared (carrier-grade NAT),
multicast, unspecified and reserved addresses: everything that is not globally reachable. An IPv6
address that carries an IPv4 address (IPv4-mapped, 6to4, NAT64, Teredo) is judged by that one.

The check is made when the callback is sent, on the addresses the connection then uses
(processing.callbacks.posting connects to them, never resolving the name again): a name that
resolved to a public address when the job was submitted may resolve to a private one later.
"""

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Instance metadata services: AWS, GCP, Azure and others at 169.254.169.254 (also link-local), AWS's
# IPv6 one (also unique local), Alibaba's (also shared address space). Named first, so that a refusal
# says what they are.
METADATA = tuple(
    ipaddress.ip_network(network)
    for network in ("169.254.169.254/32", "fd00:ec2::254/128", "100.100.100.200/32")
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class AddressRefused(Exception):
    """A callback's host resolves to an address it may not reach; the message names it and why."""


@dataclass(frozen=True)
class Resolved:
    """One address a host resolved to, as a socket connects to it."""

    address: IPAddress
    family: socket.AddressFamily
    sockaddr: tuple[Any, ...]  # (host, port) or (host, port, flowinfo, scope_id)


def networks(listed: Iterable[str]) -> list[IPNetwork]:
    """CALLBACK_ALLOWED_NETWORKS as networks (settings checked each when it was read)."""
    return [ipaddress.ip_network(network, strict=False) for network in listed]


def refusal(address: IPAddress, allowed: Iterable[IPNetwork] = ()) -> str | None:
    """Why a callback may not connect to `address` ("10.0.0.1 is a private address"); None when it
    may: a globally reachable address, or one in an `allowed` network."""
    allowed = list(allowed)
    if any(address in network for network in allowed):
        return None
    carried = carried_ipv4(address)
    if carried is not None:
        reason = refusal(carried, allowed)
        return None if reason is None else f"{address} carries {reason}"
    kind = kind_of(address)
    return None if kind is None else f"{address} is {kind}"


def kind_of(address: IPAddress) -> str | None:
    """What sort of address a callback may not reach `address` is; None for a globally reachable one."""
    if any(address in network for network in METADATA):
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "a reserved or shared address, not globally reachable"
    return None


def carried_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and leads to: IPv4-mapped, 6to4, NAT64 or Teredo."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.teredo is not None:
        return address.teredo[1]  # the client behind the Teredo server
    return None


def resolve(host: str, port: int) -> list[Resolved]:
    """Every address `host` resolves to for a TCP connection, in the resolver's order. Raises OSError
    (socket.gaierror) when it resolves to none."""
    found: list[Resolved] = []
    for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if all(known.address != address for known in found):
            found.append(Resolved(address, socket.AddressFamily(family), tuple(sockaddr)))
    return found


def checked(host: str, port: int, allowed: Iterable[IPNetwork]) -> list[Resolved]:
    """The addresses to connect to for `host`: all it resolves to, when every one may be reached.
    Raises AddressRefused naming the first that may not, or OSError when the name does not resolve."""
    allowed = list(allowed)
    found = resolve(host, port)
    for each in found:
        reason = refusal(each.address, allowed)
        if reason is not None:
            named = "" if host == str(each.address) else f"{host} resolves to "
            raise AddressRefused(f"{named}{reason}, which callbacks may not reach")
    return found
