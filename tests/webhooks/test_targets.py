"""SSRF rules of SPEC §7, with a fake resolver (no test queries DNS or dials non-loopback)."""
import pytest

from batchrouter.errors import ValidationFailed
from batchrouter.webhooks import targets
from batchrouter.webhooks.endpoints import check_registration, clean_secret, generate_secret

PUBLIC = "93.184.216.34"


def resolver_for(*answers):
    calls = []

    def resolve(host, port):
        calls.append(host)
        return list(answers)
    resolve.calls = calls
    return resolve


INTERNAL_URLS = [
    "https://127.0.0.1/hook", "https://127.1/hook", "https://2130706433/hook",
    "https://0x7f000001/hook", "https://0177.0.0.1/hook", "https://0x7f.1/hook",
    "https://[::1]/hook", "https://[::ffff:127.0.0.1]/hook", "https://[::ffff:7f00:1]/hook",
    "https://[64:ff9b::7f00:1]/hook", "https://[2002:7f00:1::]/hook",
    "https://10.0.0.5/hook", "https://172.16.3.4/hook", "https://192.168.1.1/hook",
    "https://100.64.0.1/hook", "https://169.254.10.10/hook", "https://[fe80::1]/hook",
    "https://[fd12:3456::1]/hook", "https://0.0.0.0/hook", "https://0/hook",
    "https://169.254.169.254/latest/meta-data", "https://[fd00:ec2::254]/",
    "https://100.100.100.200/", "https://224.0.0.1/", "https://[::ffff:169.254.169.254]/",
]


@pytest.mark.parametrize("url", INTERNAL_URLS)
def test_internal_addresses_in_any_spelling_are_refused(url):
    fake = resolver_for(PUBLIC)
    with pytest.raises(targets.TargetRefused):
        targets.check_url(url, allow_private=False, resolver=fake)
    assert fake.calls == []  # numeric hosts never reach DNS


@pytest.mark.parametrize("answers", [["127.0.0.1"], ["10.1.2.3"], [PUBLIC, "192.168.0.7"],
                                     ["::1"], ["::ffff:10.0.0.1"], ["100.64.1.1"],
                                     ["169.254.169.254"], ["fe80::1%eth0"]])
def test_hostnames_resolving_to_internal_addresses_are_refused(answers):
    with pytest.raises(targets.TargetRefused, match="only public"):
        targets.check_url("https://hooks.example.com/x", allow_private=False,
                          resolver=resolver_for(*answers))


@pytest.mark.parametrize("url,match", [
    ("http://hooks.example.com/x", "https"), ("ftp://hooks.example.com/x", "https"),
    ("https://user:pw@hooks.example.com/x", "Credentials"),
    ("https://user@hooks.example.com/x", "Credentials"),
    ("https://hooks.example.com/x#frag", "fragment"), ("https:///x", "no host"),
    ("https://hooks.example.com:99999/x", "port"), ("https://metadata.google.internal/", "metadata"),
    ("https://hooks.example.com/ x", "whitespace"), ("", "1–2048"), (None, "1–2048"),
])
def test_bad_url_shapes_are_refused(url, match):
    with pytest.raises(targets.TargetRefused, match=match):
        targets.check_url(url, allow_private=False, resolver=resolver_for(PUBLIC))


def test_public_host_is_accepted_and_unresolvable_refused():
    target = targets.check_url("https://hooks.example.com:8443/in?x=1", allow_private=False,
                               resolver=resolver_for(PUBLIC, "2606:2800:220:1::1"))
    assert (target.host, target.port, target.path) == ("hooks.example.com", 8443, "/in?x=1")
    with pytest.raises(targets.TargetRefused, match="does not resolve"):
        targets.check_url("https://nx.example.com/", allow_private=False,
                          resolver=resolver_for())


def test_allow_private_permits_http_loopback_and_lan_but_never_metadata():
    for url in ("http://127.0.0.1:9000/h", "https://10.0.0.5/h", "http://[::1]:80/h",
                "http://100.64.0.9/h"):
        targets.check_url(url, allow_private=True, resolver=resolver_for(PUBLIC))
    for url in ("http://169.254.169.254/", "http://[::ffff:169.254.169.254]/",
                "http://169.254.1.1/", "http://metadata/"):
        with pytest.raises(targets.TargetRefused):
            targets.check_url(url, allow_private=True, resolver=resolver_for(PUBLIC))


def test_connect_time_check_vets_the_new_answer_and_pins_it():
    answers = iter([[PUBLIC], ["127.0.0.1"]])
    resolve = lambda host, port: next(answers)
    targets.check_url("https://rebind.example/h", allow_private=False, resolver=resolve)
    with pytest.raises(targets.TargetRefused):
        targets.pin("https://rebind.example/h", allow_private=False, resolver=resolve)
    target, address = targets.pin("https://ok.example/h", allow_private=False,
                                  resolver=resolver_for(PUBLIC))
    assert str(address) == PUBLIC and target.host == "ok.example"


def test_secrets():
    generated = generate_secret()
    assert generated.startswith("whsec_") and len(generated) == 6 + 44
    assert clean_secret(None) is None and clean_secret("exactly8") == "exactly8"
    for bad in ("short", "x" * 257, " padded-secret ", "tab\tsecret", 12345678, "whsec_!!"):
        with pytest.raises(ValidationFailed):
            clean_secret(bad)
    _url, secret = check_registration("https://hooks.example.com/", "my-shared-secret",
                                     allow_private=False, resolver=resolver_for(PUBLIC))
    assert secret == "my-shared-secret"
