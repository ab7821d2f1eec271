"""Where a callback may go: its URL's form, read at submit, and the address filter every resolved
address passes at each attempt. Nothing here connects anywhere: addresses are judged by the filter
itself, and names resolved by a stand-in resolver."""

import ipaddress
import socket

import pytest

from processing.callbacks import addresses, targets
from processing.callbacks.addresses import AddressRefused, networks, refusal
from processing.errors import CallbackRefused


@pytest.mark.parametrize(
    "address, kind",
    [
        ("10.0.0.1", "a private address"),
        ("172.16.5.4", "a private address"),
        ("192.168.1.1", "a private address"),
        ("169.254.169.254", "a cloud metadata address"),
        ("169.254.10.1", "a link-local address"),
        ("100.100.100.200", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("fd00::1", "a private address"),
        ("fe80::1", "a link-local address"),
        ("127.0.0.1", "a loopback address"),
        ("127.8.9.10", "a loopback address"),
        ("::1", "a loopback address"),
        ("0.0.0.0", "the unspecified address"),
        ("::", "the unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("100.64.0.1", "a reserved or shared address, not globally reachable"),
        ("192.0.2.7", "a private address"),  # documentation range
    ],
)
def test_addresses_outside_the_public_internet_are_refused_saying_what_they_are(address, kind):
    assert refusal(ipaddress.ip_address(address)) == f"{address} is {kind}"


@pytest.mark.parametrize(
    "address, carried",
    [
        ("::ffff:10.0.0.1", "10.0.0.1 is a private address"),  # IPv4-mapped
        ("::ffff:127.0.0.1", "127.0.0.1 is a loopback address"),
        ("2002:a9fe:a9fe::1", "169.254.169.254 is a cloud metadata address"),  # 6to4
        ("64:ff9b::a00:1", "10.0.0.1 is a private address"),  # NAT64
    ],
)
def test_an_ipv6_address_carrying_an_ipv4_one_is_judged_by_it(address, carried):
    ip = ipaddress.ip_address(address)
    assert refusal(ip) == f"{ip} carries {carried}"


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808"])
def test_public_addresses_are_allowed(address):
    assert refusal(ipaddress.ip_address(address)) is None


def test_the_networks_the_operator_lists_are_allowed_and_nothing_more():
    allowed = networks(["127.0.0.1", "10.20.0.0/16"])
    assert refusal(ipaddress.ip_address("127.0.0.1"), allowed) is None
    assert refusal(ipaddress.ip_address("::ffff:127.0.0.1"), allowed) is None
    assert refusal(ipaddress.ip_address("10.20.3.4"), allowed) is None
    assert refusal(ipaddress.ip_address("::1"), allowed) == "::1 is a loopback address"
    assert refusal(ipaddress.ip_address("10.21.0.1"), allowed) == "10.21.0.1 is a private address"
    assert refusal(ipaddress.ip_address("::1"), networks(["::1"])) is None


@pytest.fixture
def resolver(monkeypatch):
    """Names resolved as a test says (`resolver["hooks.example"] = [...]`), with no DNS query; any other
    name is an error."""
    answers: dict[str, list[str]] = {}

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in answers[host]
        ]

    monkeypatch.setattr(addresses.socket, "getaddrinfo", getaddrinfo)
    return answers


def test_a_name_is_refused_when_any_address_it_resolves_to_is(resolver):
    resolver["hooks.example"] = ["93.184.215.14", "10.1.2.3"]
    with pytest.raises(AddressRefused, match=r"hooks.example resolves to 10.1.2.3 is a private address"):
        addresses.checked("hooks.example", 443, [])
    resolver["loopback.example"] = ["127.0.0.1"]
    with pytest.raises(AddressRefused, match="loopback"):
        addresses.checked("loopback.example", 443, [])
    resolver["public.example"] = ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]
    checked = addresses.checked("public.example", 443, [])
    assert [str(each.address) for each in checked] == resolver["public.example"]
    assert checked[0].sockaddr == ("93.184.215.14", 443)


def test_a_name_that_does_not_resolve_is_an_error_to_retry_not_a_refusal(resolver):
    with pytest.raises(socket.gaierror):
        addresses.checked("nowhere.example", 443, [])


@pytest.mark.parametrize(
    "url, host, port, path",
    [
        ("https://hooks.example.com/darkroom?team=7", "hooks.example.com", 443, "/darkroom?team=7"),
        ("http://hooks.example.com", "hooks.example.com", 80, "/"),
        ("HTTPS://Hooks.Example.COM:8443/x", "hooks.example.com", 8443, "/x"),
        ("http://[2606:4700::1111]:8080/a", "2606:4700::1111", 8080, "/a"),
        ("https://bücher.example/hook", "xn--bcher-kva.example", 443, "/hook"),
    ],
)
def test_a_callback_url_is_read_into_its_host_port_and_path(url, host, port, path):
    target = targets.parse(url)
    assert (target.host, target.port, target.path) == (host, port, path)


@pytest.mark.parametrize(
    "url, says",
    [
        ("ftp://hooks.example.com/x", "must be an http:// or https:// URL"),
        ("javascript:alert(1)", "must be an http:// or https:// URL"),
        ("hooks.example.com/x", "must be an http:// or https:// URL"),
        ("https://", "has no host"),
        ("https://user:secret@hooks.example.com/", "may not carry a user name or password"),
        ("https://hooks.example.com/#done", "may not have a #fragment"),
        ("https://hooks.example.com/a b", "may not hold spaces"),
        ("https://-bad-.example/", "is not a valid name"),
        ("https://1.2.3.999/", "is not a valid address"),
        ("https://hooks.example.com:99999/", "is not a URL"),
        ("https://hooks.example.com/" + "a" * 2048, "is longer than 2048 characters"),
    ],
)
def test_a_callback_url_that_cant_be_one_is_refused_saying_why(url, says):
    with pytest.raises(CallbackRefused) as refused:
        targets.parse(url)
    assert refused.value.code == "invalid_callback_url" and says in refused.value.message


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1/hook", "http://169.254.169.254/latest/meta-data/", "http://[fd00::1]/hook"]
)
def test_a_url_naming_a_refused_address_is_refused_at_submit(url):
    with pytest.raises(CallbackRefused) as refused:
        targets.check(url, [])
    assert refused.value.code == "callback_url_refused"
    assert targets.check(url, networks(["10.0.0.0/8", "169.254.0.0/16", "fd00::/8"])).url == url
