"""Who may migrate a guest to us, and to whom we send ours.

A migration peer supplies guest code, page tables, registers and memory, so
the destination must know who is talking before it builds anything; the
source must know it talks to the destination it meant before it sends its
guest's memory.  Both ends share a secret (a file, like an ssh key) and
prove it with a mutual HMAC-SHA256 challenge-response on fresh nonces from
both sides, before the stream's header:

    destination -> {"kvmharness-migration": 1, "auth": "hmac-sha256" | "none",
                    "nonce": hex}
    source      -> {"auth": ..., "nonce": hex,
                    "mac": HMAC(secret, "source" | dnonce | snonce)}
    destination -> {"auth": "ok", "mac": HMAC(secret, "destination" | dnonce | snonce)}
                   or {"auth": "refused", "error": ...}, and it hangs up

Why not TLS-PSK: Python's ssl module gained PSK callbacks only in 3.13, and
we support 3.11.  What this buys: a peer without the secret cannot start a
migration (it is refused before one byte of guest is parsed), and a
recorded handshake cannot be replayed (both nonces are fresh).  What it does
not buy: confidentiality, or protection from an attacker on the path who
takes over the TCP connection after the handshake; as with QEMU's plain
tcp: migration, cross untrusted networks through a tunnel (WireGuard,
IPsec, ssh).

"none" is for loopback only: the command line refuses to listen beyond
loopback without a secret, and a source that holds a secret refuses a
destination that does not ask for it.
"""

import hashlib
import ipaddress
import hmac
import json
import os
import secrets
import socket
import stat

from .. import peer
from ..errors import HarnessError, StreamError, UsageError

PROTOCOL = 1
HMAC_SHA256, NONE = "hmac-sha256", "none"
NONCE_BYTES = 32
MIN_SECRET_BYTES = 16
MAX_SECRET_BYTES = 4096
MAX_LINE = 4096
HANDSHAKE_TIMEOUT = 10.0  # a peer that connects and says nothing does not hold the listener


class AuthError(StreamError):
    """The peer did not prove the shared secret (or asked for one we lack)."""


def load_secret(path):
    """The shared secret from `path`: a file only its owner can read, of
    16..4096 bytes (surrounding whitespace stripped), e.g. made with
    `head -c 32 /dev/urandom | base64 > secret; chmod 600 secret`."""
    try:
        # O_NONBLOCK: a FIFO would block this open until someone writes it
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise UsageError(f"cannot read the secret file '{path}': {e.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):  # a directory, a FIFO, a device: checked before reading
        os.close(fd)
        raise UsageError(f"the secret file '{path}' is not a regular file")
    with os.fdopen(fd, "rb") as f:
        if mode & 0o077:
            raise UsageError(f"the secret file '{path}' is open to its group or others (mode "
                             f"{stat.S_IMODE(mode):o}); chmod 600 it")
        secret = f.read(MAX_SECRET_BYTES + 1).strip()
    if not MIN_SECRET_BYTES <= len(secret) <= MAX_SECRET_BYTES:
        raise UsageError(f"the secret in '{path}' must be {MIN_SECRET_BYTES}..{MAX_SECRET_BYTES} bytes")
    return secret


def _mac(secret, role, dnonce, snonce):
    return hmac.new(secret, role + dnonce + snonce, hashlib.sha256).hexdigest()


def _send(sock, obj):
    sock.sendall(json.dumps(obj).encode() + b"\n")


def _receive(sock, who, deadline):
    """One handshake line within `deadline` (the whole exchange's, so that
    a peer trickling a byte at a time cannot hold us): a JSON object of at
    most MAX_LINE bytes, nested at most peer.MAX_DEPTH deep.  Reads a byte
    at a time so that nothing of the stream after it is consumed."""
    try:
        line, _ = peer.read_line(sock, deadline, MAX_LINE, one_byte=True)
    except EOFError:
        raise AuthError(f"the {who} hung up during the handshake") from None
    except OverflowError:
        raise AuthError(f"the {who}'s handshake line is too long") from None
    except socket.timeout:
        raise AuthError(f"the {who} did not complete the handshake within {deadline.seconds:g} s") from None
    try:
        obj = peer.loads(line)
    except ValueError:
        raise AuthError(f"the {who} does not speak the kvmharness migration handshake") from None
    if not isinstance(obj, dict):
        raise AuthError(f"the {who} does not speak the kvmharness migration handshake")
    return obj


def _proves(mac, secret, role, dnonce, snonce):
    """Whether the peer's `mac` is ours; any JSON value may come (a
    non-ASCII string made hmac.compare_digest raise TypeError)."""
    if not isinstance(mac, str):
        return False
    return hmac.compare_digest(mac.encode("utf-8", "replace"), _mac(secret, role, dnonce, snonce).encode())


def _nonce(obj, who):
    value = obj.get("nonce")
    try:
        nonce = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        nonce = b""
    if len(nonce) != NONCE_BYTES:
        raise AuthError(f"the {who}'s nonce is malformed")
    return nonce


def tell_refused(sock, error):
    """Say why we refuse, so that the peer need not wait for its timeout
    (briefly: a peer that does not read must not hold us here either)."""
    try:
        sock.settimeout(1.0)
        _send(sock, {"auth": "refused", "error": str(error)})
    except OSError:
        pass


def authenticate_source(sock, secret, timeout=HANDSHAKE_TIMEOUT, on_refusal=None):
    """Destination side: raises AuthError (after telling the peer) unless the
    peer proves `secret` (any peer, with `secret` None) within `timeout`
    seconds for the whole handshake.  `on_refusal(error)` is called before
    the peer is told, so that whoever records refusals (migrate-listen's
    stderr, a test) never lags what the peer has already read."""
    deadline = peer.Deadline(timeout)
    dnonce = secrets.token_bytes(NONCE_BYTES)
    try:
        deadline.arm(sock)
        _send(sock, {"kvmharness-migration": PROTOCOL, "auth": HMAC_SHA256 if secret else NONE,
                     "nonce": dnonce.hex()})
        hello = _receive(sock, "source", deadline)
        if hello.get("auth") == "refused":
            raise AuthError(f"the source refused: {peer.printable(hello.get('error'))}")
        if secret is None:
            if hello.get("auth") != NONE:
                raise AuthError("the source expects a shared secret; this destination has none "
                                "(--secret-file)")
            deadline.arm(sock)
            _send(sock, {"auth": "ok"})
            return
        if hello.get("auth") != HMAC_SHA256:
            raise AuthError("the source did not authenticate: this destination requires the shared secret")
        snonce = _nonce(hello, "source")
        if not _proves(hello.get("mac"), secret, b"source", dnonce, snonce):
            raise AuthError("the source does not know the shared secret")
        deadline.arm(sock)
        _send(sock, {"auth": "ok", "mac": _mac(secret, b"destination", dnonce, snonce)})
    except AuthError as e:
        if on_refusal is not None:
            on_refusal(e)
        tell_refused(sock, e)
        raise
    except OSError as e:  # socket.timeout included: nothing can be told
        error = AuthError(f"handshake failed: {e}")
        if on_refusal is not None:
            on_refusal(error)
        raise error from None
    finally:
        sock.settimeout(None)


def _answer_greeting(sock, secret, deadline):
    """Source side, first half: read the destination's greeting and answer
    it; returns (destination nonce, source nonce or None)."""
    greeting = _receive(sock, "destination", deadline)
    if greeting.get("kvmharness-migration") != PROTOCOL:
        raise AuthError("the destination does not speak the kvmharness migration handshake")
    dnonce = _nonce(greeting, "destination")
    asked = greeting.get("auth")
    if secret is None:
        if asked != NONE:
            raise AuthError("the destination requires a shared secret (--secret-file)")
        _send(sock, {"auth": NONE})
        return dnonce, None
    if asked != HMAC_SHA256:
        raise AuthError("the destination does not authenticate its peers; refusing to send the guest to it")
    snonce = secrets.token_bytes(NONCE_BYTES)
    _send(sock, {"auth": HMAC_SHA256, "nonce": snonce.hex(), "mac": _mac(secret, b"source", dnonce, snonce)})
    return dnonce, snonce


def authenticate_destination(sock, secret, timeout=HANDSHAKE_TIMEOUT):
    """Source side: raises HarnessError unless the destination proves
    `secret` (or, with `secret` None, asks for none) within `timeout`
    seconds for the whole handshake."""
    old = sock.gettimeout()
    deadline = peer.Deadline(timeout)
    try:
        try:
            dnonce, snonce = _answer_greeting(sock, secret, deadline)
        except AuthError as e:
            tell_refused(sock, e)
            raise
        answer = _receive(sock, "destination", deadline)
        if answer.get("auth") == "refused":
            raise AuthError(f"the destination refused: {peer.printable(answer.get('error'))}")
        if answer.get("auth") != "ok":
            raise AuthError("the destination's handshake answer is malformed")
        if secret is not None:
            if not _proves(answer.get("mac"), secret, b"destination", dnonce, snonce):
                raise AuthError("the destination does not know the shared secret; refusing to send the guest")
    except OSError as e:
        raise HarnessError(f"migration handshake failed: {e}") from None
    finally:
        sock.settimeout(old)


def is_loopback(host):
    """Whether binding `host` keeps the listener on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
