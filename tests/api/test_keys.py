"""API keys on disk: made, found, revoked and listed, by the library and `xmodal keys`."""

from __future__ import annotations

import json
import os
import stat

import pytest

from xmodal.api.access import ExposureRefused, check_exposure
from xmodal.api.keys import (
    KeyFileError,
    KeyRing,
    KeySpecError,
    Rate,
    Scope,
    UnknownKeyError,
    normalise_origin,
)
from xmodal.api.rate_limit import TokenBuckets


@pytest.fixture
def ring(tmp_path) -> KeyRing:
    return KeyRing.of_data(tmp_path / "data")


def test_a_key_is_kept_hashed_in_an_owner_only_file_and_found_by_its_secret(ring):
    assert not ring.keyed and ring.all_keys() == ()
    key, secret = ring.create(Scope.SEARCH, "backend")
    assert secret.startswith(f"xk_{key.id}_") and len(secret) > 50
    text = ring.path.read_text()
    assert secret not in text and key.secret_sha256 in text
    if os.name == "posix":
        assert stat.S_IMODE(ring.path.stat().st_mode) == 0o600
    assert ring.keyed and ring.find(secret) == key
    assert ring.find(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert ring.find(f"xk_{'0' * 12}_whatever") is None and ring.find("nonsense") is None
    # Another process's ring (a running server) sees the key and then its revocation.
    server_ring = KeyRing(ring.path)
    assert server_ring.find(secret) == key
    revoked = ring.revoke(key.id)
    assert revoked.revoked_at is not None and server_ring.find(secret) is None
    assert [k.id for k in server_ring.all_keys()] == [key.id]  # listed, as revoked
    assert server_ring.keyed  # every key revoked: still keyed, nobody gets in


def test_publishable_keys_carry_origins_and_a_rate(ring):
    key, secret = ring.create(
        Scope.PUBLISHABLE, origins=["https://Shop.example/", "http://localhost:3000"]
    )
    assert secret.startswith("pk_")
    assert key.origins == ("https://shop.example", "http://localhost:3000")
    assert key.rate == "10/s"  # the default for a key put in a web page
    assert ring.origin_listed("https://shop.example") and not ring.origin_listed(
        "https://x.example"
    )
    ring.revoke(key.id)
    assert not ring.origin_listed("https://shop.example")


@pytest.mark.parametrize(
    ("scope", "origins", "rate", "message"),
    [
        (Scope.PUBLISHABLE, [], None, "needs at least one --origin"),
        (Scope.SEARCH, ["https://shop.example"], None, "only publishable keys"),
        (Scope.PUBLISHABLE, ["https://shop.example/path"], None, "no path"),
        (Scope.PUBLISHABLE, ["ftp://shop.example"], None, "scheme://host"),
        (Scope.SEARCH, [], "10 per second", "N/s, N/min or N/h"),
        (Scope.SEARCH, [], "0/s", "N >= 1"),
    ],
)
def test_a_key_that_cannot_be_made_as_asked_is_refused(ring, scope, origins, rate, message):
    with pytest.raises(KeySpecError, match=message):
        ring.create(scope, origins=origins, rate=rate)
    assert not ring.path.exists()


def test_rates_and_origins_are_read_as_written():
    assert Rate.parse("10/s") == Rate(10, 1.0) and str(Rate.parse("600 / MIN")) == "600/min"
    assert Rate.parse("5/h").per_second == pytest.approx(5 / 3600)
    assert normalise_origin("https://shop.example:443") == "https://shop.example"
    assert normalise_origin("http://[::1]:8080") == "http://[::1]:8080"


def test_unknown_and_damaged_key_files_say_so(ring):
    with pytest.raises(UnknownKeyError, match="no key 'abc'"):
        ring.revoke("abc")
    ring.path.write_text("{not json")
    with pytest.raises(KeyFileError, match="damaged"):
        ring.find("xk_000000000000_x")


def test_a_key_file_removed_under_a_running_server_does_not_open_it(ring):
    ring.create(Scope.SEARCH)
    assert ring.keyed
    ring.path.unlink()
    assert ring.keyed  # restart the server to run it open again


def test_token_buckets_refill_at_their_rate():
    now = [100.0]
    buckets = TokenBuckets(clock=lambda: now[0])
    rate = Rate(2, 60.0)  # 2 a minute: one token every 30 s
    assert buckets.take("a", rate) == 0 and buckets.take("a", rate) == 0
    assert buckets.take("a", rate) == pytest.approx(30.0)
    assert buckets.take("b", rate) == 0  # another bucket
    now[0] += 15
    assert buckets.take("a", rate) == pytest.approx(15.0)
    now[0] += 15
    assert buckets.take("a", rate) == 0


def test_token_buckets_are_bounded_in_number():
    buckets = TokenBuckets(clock=lambda: 0.0, max_buckets=3)
    rate = Rate(1, 3600.0)
    for name in "abcd":
        assert buckets.take(name, rate) == 0
    assert buckets.take("d", rate) > 0  # still known
    assert buckets.take("a", rate) == 0  # forgotten: back full


def test_serving_beyond_loopback_needs_a_key_or_insecure_no_auth(ring):
    for host in ("127.0.0.1", "localhost", "::1"):
        check_exposure(host, ring, insecure_no_auth=False)
    for host in ("0.0.0.0", "::", "192.168.1.20", "myhost.lan"):
        with pytest.raises(ExposureRefused, match="--insecure-no-auth"):
            check_exposure(host, ring, insecure_no_auth=False)
        check_exposure(host, ring, insecure_no_auth=True)
    ring.create(Scope.SEARCH)
    check_exposure("0.0.0.0", ring, insecure_no_auth=False)


# -- the command line ------------------------------------------------------------------
def test_keys_create_list_and_revoke(xmodal, tmp_path):
    code, out, err = xmodal("keys", "list")
    assert code == 0 and "no keys" in out, err
    code, out, err = xmodal("keys", "create", "--scope", "search", "--name", "backend")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("created search key ") and "not shown again" in lines[-1]
    secret = next(line for line in lines if line.startswith("xk_"))
    key_id = secret.split("_")[1]
    ring = KeyRing.of_data(tmp_path / "data")
    assert ring.find(secret) is not None

    code, out, err = xmodal(
        "keys", "create", "--scope", "publishable", "--origin", "https://shop.example",
        "--rate", "5/s", "--json",
    )  # fmt: skip
    assert code == 0, err
    created = json.loads(out)
    assert created["secret"].startswith("pk_") and created["rate"] == "5/s"
    assert "secret_sha256" not in created

    code, out, err = xmodal("keys", "list", "--json")
    listed = json.loads(out)
    assert code == 0 and [k["id"] for k in listed] == [key_id, created["id"]]
    assert not any("secret" in name for k in listed for name in k)
    code, out, _ = xmodal("keys", "list")
    assert key_id in out and "backend" in out and secret not in out

    code, out, err = xmodal("keys", "revoke", key_id)
    assert code == 0 and f"revoked search key {key_id}" in out, err
    assert ring.find(secret) is None


def test_keys_errors_are_one_line(xmodal):
    code, _, err = xmodal("keys", "create", "--scope", "publishable")
    assert code == 2 and err.startswith("error: a publishable key needs at least one --origin")
    assert err.count("\n") == 1
    code, _, err = xmodal("keys", "revoke", "0123456789ab")
    assert code == 2 and err == "error: no key '0123456789ab' (`xmodal keys list` shows the keys)\n"
    code, _, _ = xmodal("keys", "create", "--scope", "root")
    assert code == 2  # a usage error


def test_serve_refuses_every_interface_without_a_key(xmodal):
    code, out, err = xmodal("serve", "--host", "0.0.0.0", "--port", "0")
    assert code == 2 and out == ""
    assert err.startswith("error: refusing to listen on 0.0.0.0 with no API key")
    assert "--insecure-no-auth" in err and err.count("\n") == 1
