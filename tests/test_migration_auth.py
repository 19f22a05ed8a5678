"""Who may migrate a guest in, and to whom a guest is sent (issue 11, item
9): the HMAC-SHA256 handshake on real sockets, and `migrate-listen`
refusing peers without the secret while it goes on listening."""

import contextlib
import json
import socket
import subprocess
import threading
import time

import pytest

from kvmharness.errors import HarnessError, UsageError
from kvmharness.migration.auth import (AuthError, authenticate_destination, authenticate_source, is_loopback,
                                       load_secret)
from kvmharness.pytest_plugin import KVMHARNESS

SECRET = b"correct horse battery staple 42"
OTHER = b"an entirely different secret!!"


def _handshake(dest_secret, source_secret):
    """Run both ends over a socketpair: (destination outcome, source outcome),
    each None for success or the exception raised."""
    a, b = socket.socketpair()
    outcome = {}

    def destination():
        try:
            authenticate_source(b, dest_secret)
            outcome["destination"] = None
        except HarnessError as e:
            outcome["destination"] = e

    t = threading.Thread(target=destination)
    t.start()
    try:
        authenticate_destination(a, source_secret)
        outcome["source"] = None
    except HarnessError as e:
        outcome["source"] = e
    t.join(15)
    a.close()
    b.close()
    return outcome["destination"], outcome["source"]


def test_both_ends_with_the_secret_authenticate():
    assert _handshake(SECRET, SECRET) == (None, None)
    assert _handshake(None, None) == (None, None)  # loopback use: no secret on either side


@pytest.mark.parametrize("dest_secret,source_secret,dest_says,source_says", [
    (SECRET, OTHER, "does not know the shared secret", "does not know the shared secret"),
    (SECRET, None, "the source refused: the destination requires a shared secret",
     "requires a shared secret"),
    (None, SECRET, "the source refused: the destination does not authenticate its peers",
     "does not authenticate its peers"),
])
def test_a_missing_or_wrong_secret_is_refused_on_both_sides(dest_secret, source_secret, dest_says, source_says):
    dest, source = _handshake(dest_secret, source_secret)
    assert isinstance(dest, AuthError) and dest_says in str(dest)
    assert isinstance(source, HarnessError) and source_says in str(source)


def test_a_recorded_handshake_cannot_be_replayed():
    """An eavesdropper's copy of a good source's answer fails against the
    next destination: the destination's nonce is fresh each time."""
    a, b = socket.socketpair()

    def source():
        with contextlib.suppress(HarnessError):
            authenticate_destination(a, SECRET)

    t = threading.Thread(target=source)
    t.start()
    b.sendall(json.dumps({"kvmharness-migration": 1, "auth": "hmac-sha256", "nonce": "00" * 32}).encode() + b"\n")
    recorded = b.makefile("rb").readline()  # the source's proof for that nonce
    b.close()
    t.join(5)
    a.close()
    c, d = socket.socketpair()
    errors = []

    def destination():
        try:
            authenticate_source(d, SECRET)
        except AuthError as e:
            errors.append(str(e))

    t = threading.Thread(target=destination)
    t.start()
    lines = c.makefile("rb")
    lines.readline()  # the greeting, with a new nonce
    c.sendall(recorded)
    t.join(5)
    assert errors == ["the source does not know the shared secret"]
    assert json.loads(lines.readline())["auth"] == "refused"
    c.close()
    d.close()


@pytest.mark.parametrize("peer_sends", [b"", b"GET / HTTP/1.0\r\n\r\n", b"{" * 5000, b'{"auth": 7}\n'])
def test_garbage_and_empty_peers_are_refused(peer_sends):
    a, b = socket.socketpair()
    a.sendall(peer_sends)
    a.shutdown(socket.SHUT_WR)
    with pytest.raises(AuthError):
        authenticate_source(b, SECRET)
    a.close()
    b.close()


def test_secret_files_are_checked(tmp_path):
    good = tmp_path / "good"
    good.write_bytes(SECRET + b"\n")
    good.chmod(0o600)
    assert load_secret(str(good)) == SECRET
    shared = tmp_path / "shared"
    shared.write_bytes(SECRET)
    shared.chmod(0o644)
    with pytest.raises(UsageError, match="open to its group or others"):
        load_secret(str(shared))
    short = tmp_path / "short"
    short.write_bytes(b"pw")
    short.chmod(0o600)
    with pytest.raises(UsageError, match="16..4096 bytes"):
        load_secret(str(short))
    with pytest.raises(UsageError, match="cannot read"):
        load_secret(str(tmp_path / "missing"))


def test_loopback_addresses():
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "example.com"]))


def test_listening_beyond_loopback_takes_a_secret(cli):
    result = cli("migrate-listen", "--host", "0.0.0.0", "--port", "1")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "takes --secret-file" in result.stderr


def _secret_file(path, secret):
    path.write_bytes(secret)
    path.chmod(0o600)
    return str(path)


@pytest.mark.kvm
def test_migrate_listen_refuses_strangers_and_goes_on_listening(tmp_path):
    """Empty, garbage and wrong-secret connections are refused and said on
    stderr; the listener stays up, and the source with the secret then
    migrates its guest in."""
    good, wrong = _secret_file(tmp_path / "good", SECRET), _secret_file(tmp_path / "wrong", OTHER)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dest = subprocess.Popen([KVMHARNESS, "migrate-listen", "--port", str(port), "--secret-file", good,
                             "--run-after", "200ms", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port)).close()  # an empty connection
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "the listener never came up"
                time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"KVMHMIG\0" + b"\0" * 4096)  # a raw stream without the handshake
        source = [KVMHARNESS, "migrate", "--to", f"127.0.0.1:{port}", "--mem", "64MiB", "--wps", "10k", "--json"]
        stranger = subprocess.run(source + ["--secret-file", wrong], capture_output=True, text=True, timeout=120)
        assert stranger.returncode == 1
        assert "does not know the shared secret" in stranger.stderr and "Traceback" not in stranger.stderr
        assert dest.poll() is None, "a stranger ended the listener"
        friend = subprocess.run(source + ["--secret-file", good], capture_output=True, text=True, timeout=120)
        out, err = dest.communicate(timeout=60)
    finally:
        dest.kill()
    assert friend.returncode == 0, friend.stderr
    assert json.loads(friend.stdout)["verified"]
    assert dest.returncode == 0 and json.loads(out)["status"] == "resumed"
    refusals = [line for line in err.splitlines() if line.startswith("refused a connection")]
    assert len(refusals) == 3, err
    assert "does not know the shared secret" in refusals[2]
    assert "Traceback" not in err
