"""`migrate-listen`'s accepting: handshakes run side by side, so that a peer
that connects and trickles (or says nothing) does not keep a legitimate
source waiting (issue 25: one byte every 6 s held the single-threaded
listener 75 s, and two silent connects made a real source fail).

Each accepted connection gets its own thread for the handshake only
(auth.authenticate_source, one deadline for all of it); the first that
authenticates is handed to the caller, which receives the guest on it.
At most MAX_PENDING handshakes run at once: a connection beyond that is
told so and closed at once, so a flood of connects costs a bounded number
of threads, each for at most the handshake's deadline.
"""

import queue
import socket
import threading

from .auth import HANDSHAKE_TIMEOUT, AuthError, authenticate_source, tell_refused

MAX_PENDING = 16
POLL = 0.2  # how often the accepting loop looks for an authenticated peer


class HandshakeListener:
    """Accepts on `listener` until a peer proves `secret`; `refused(peer,
    error)` is called (from a handshake thread) for each one that does
    not.  A context manager: on exit, pending handshakes are told the
    listener is busy or gone and their connections closed."""

    def __init__(self, listener, secret, refused, timeout=HANDSHAKE_TIMEOUT):
        self.listener = listener
        self.secret = secret
        self.refused = refused
        self.timeout = timeout
        self._ready = queue.Queue()
        self._lock = threading.Lock()
        self._pending = set()
        self._taken = False
        self._closed = False

    def accept(self):
        """(connection, peer address) of the first peer to authenticate."""
        self.listener.settimeout(POLL)
        while True:
            try:
                return self._ready.get_nowait()
            except queue.Empty:
                pass
            try:
                conn, peer = self.listener.accept()
            except socket.timeout:
                continue
            with self._lock:
                full = len(self._pending) >= MAX_PENDING
                if not full:
                    self._pending.add(conn)
            if full:
                # Recorded before the peer is told, as every refusal here is
                # (see _record).
                self._record(peer, AuthError(f"{MAX_PENDING} handshakes already pending"))
                tell_refused(conn, f"{MAX_PENDING} handshakes are already pending here; try again")
                conn.close()
                continue
            threading.Thread(target=self._handshake, args=(conn, peer), name="handshake", daemon=True).start()

    def _handshake(self, conn, peer):
        try:
            authenticate_source(conn, self.secret, self.timeout, on_refusal=lambda e: self._record(peer, e))
        except AuthError:  # recorded by on_refusal, before the peer was told
            self._drop(conn)
            return
        except OSError as e:
            self._drop(conn)
            self._record(peer, AuthError(f"connection failed: {e}"))
            return
        with self._lock:
            self._pending.discard(conn)
            first = not self._taken
            self._taken = True
        if first:
            self._ready.put((conn, peer))
        else:
            tell_refused(conn, "this listener is already receiving a migration")
            conn.close()

    def _record(self, peer, error):
        """Hands a refusal to `refused`: always before the peer is told, so
        that whoever reads the refusals (a log, a test) never lags what the
        peer has seen; not for our own shutdown at exit."""
        if not self._closed:
            self.refused(peer, error)

    def _drop(self, conn):
        with self._lock:
            self._pending.discard(conn)
        conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        with self._lock:
            self._taken = self._closed = True  # a handshake that completes from now on is turned away
            pending, self._pending = self._pending, set()
        for conn in pending:
            try:
                conn.shutdown(socket.SHUT_RDWR)  # its thread's receive ends at once
            except OSError:
                pass
