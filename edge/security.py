"""CurveZMQ for the daemon's sockets: who may talk to the daemon, and an encrypted link (docs/security.md).

Server side, :class:`CurveServer` (one per daemon): reads the daemon's secret key file and the folder of
authorised client public keys at construction (a missing or malformed key is a :class:`ConfigError` at start),
then :meth:`CurveServer.secure` makes any socket a CURVE server before it binds, by its role name (``control``,
``input``, ``output``; a socket added later calls it with its own role). The client keys are checked by ZAP
(RFC 27) in pyzmq's :class:`zmq.auth.thread.ThreadAuthenticator`: one per ZeroMQ context, shared by reference
count between the daemons of that context (a context has one ZAP endpoint, ``inproc://zeromq.zap.01``), each
daemon in its own ZAP domain with its own authorised keys. It stops when the last daemon using it closes.

Client side, :func:`curve_client`: a socket connects as a CURVE client with its key pair (a ``.key_secret``
file) and the server's public key (a ``.key`` file). Keys are made by ``edge-keys`` (:mod:`edge.keys_cli`).

Why pyzmq's ``zmq.auth`` and not our own: the handshake, encryption and ZAP protocol are libzmq's and
pyzmq's (maintained, reviewed, RFC 26/27); this module only reads settings, validates key files and applies
socket options. A CURVE server socket without a ZAP handler accepts *any* client key (encryption without
authentication), which is why the authenticator is running before the first protected socket binds.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from .errors import ConfigError, EdgeError

__all__ = ["SOCKET_ROLES", "CurveServer", "KeyPair", "curve_client", "is_loopback", "load_public_key", "load_secret_key"]
log = logging.getLogger("edge.security")

SOCKET_ROLES = ("control", "input", "output")
"""Socket names ``DaemonConfig.curve`` may list (a new daemon socket adds its role here)."""

_Z85_KEY = re.compile(rb"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")  # a 32-byte key in Z85 (RFC 32)
_MAKE_KEYS = "make key pairs with edge-keys new --dir KEYS --name NAME (docs/security.md)"


@dataclass(frozen=True)
class KeyPair:
    """A CURVE key pair read from a ``.key_secret`` file (both keys Z85-encoded, 40 bytes each)."""

    public: bytes
    secret: bytes


def _read_certificate(path: str | os.PathLike[str], what: str) -> tuple[bytes, bytes | None]:
    """``(public, secret or None)`` of a zmq certificate file, each checked to be a 32-byte Z85 key."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {str(p)!r}: {'is a folder, not a key file' if p.is_dir() else 'no such file'}; "
                          f"{_MAKE_KEYS}")
    try:
        public, secret = zmq.auth.load_certificate(p)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{what} {str(p)!r} is not a ZeroMQ certificate ({exc}); {_MAKE_KEYS}") from exc
    for name, key in (("public", public), ("secret", secret)):
        if key is not None and not _Z85_KEY.match(key):
            raise ConfigError(f"{what} {str(p)!r}: its {name} key is not a 40-character Z85 CURVE key; {_MAKE_KEYS}")
    return public, secret


def load_secret_key(path: str | os.PathLike[str], what: str = "secret key file") -> KeyPair:
    """Read a key pair from a secret certificate (``NAME.key_secret`` written by ``edge-keys``).

    A file readable by group or others is accepted with a warning (``edge-keys`` writes mode 0600).

    Parameters
    ----------
    path : path-like
        The ``.key_secret`` file.
    what : str
        What the file is, for messages (e.g. the setting's name).

    Returns
    -------
    KeyPair

    Raises
    ------
    ConfigError
        If the file is missing, is not a certificate, or holds no secret key (a public ``.key`` file).
    """
    public, secret = _read_certificate(path, what)
    if secret is None:
        raise ConfigError(f"{what} {str(path)!r} holds only a public key: give the NAME.key_secret file")
    mode = Path(path).stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s %s is readable by other users (mode %o): chmod 600 it", what, path, stat.S_IMODE(mode))
    return KeyPair(public, secret)


def load_public_key(path: str | os.PathLike[str], what: str = "public key file") -> bytes:
    """The Z85 public key (40 bytes) of a certificate (``NAME.key``, or the public half of ``NAME.key_secret``).

    Raises
    ------
    ConfigError
        If the file is missing or is not a certificate.
    """
    return _read_certificate(path, what)[0]


def load_authorized_keys(folder: str | os.PathLike[str]) -> dict[bytes, bool]:
    """The client public keys in ``folder`` (every ``*.key`` file), in :meth:`Authenticator.configure_curve`'s form.

    Raises
    ------
    ConfigError
        If the folder is missing, holds a malformed ``*.key`` file, or holds none (nobody could connect).
    """
    d = Path(folder)
    if not d.is_dir():
        raise ConfigError(f"curve_authorized_dir {str(d)!r} is not a folder (the authorised clients' public "
                          f"NAME.key files); {_MAKE_KEYS}")
    keys = {load_public_key(f, "authorised client key"): True for f in sorted(d.glob("*.key"))}
    if not keys:
        raise ConfigError(f"curve_authorized_dir {str(d)!r} holds no client public key (*.key): nobody could "
                          f"connect; copy each client's NAME.key there ({_MAKE_KEYS})")
    return keys


def is_loopback(endpoint: str) -> bool:
    """True for an endpoint only this machine can reach.

    ``ipc://`` and ``inproc://``, and ``tcp://`` on 127.0.0.0/8, ``[::1]`` or ``localhost``; anything else
    (``tcp://*``, ``tcp://0.0.0.0``, an interface name, another address) counts as reachable from the network.
    """
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    if not endpoint.startswith("tcp://"):
        return False
    host = endpoint[len("tcp://"):].rsplit(":", 1)[0]
    if ";" in host:  # "source;destination": the bind address is what matters for a bind
        host = host.split(";", 1)[0]
    return host == "localhost" or host == "[::1]" or re.fullmatch(r"127(\.\d{1,3}){3}", host) is not None


def curve_sockets(curve: Sequence[str], control: str, insecure_control: bool) -> frozenset[str]:
    """The daemon sockets to protect: those listed in ``curve``, plus ``control`` when its endpoint is not
    loopback (the default rule), unless ``insecure_control``.

    Raises
    ------
    ConfigError
        An unknown socket name, or ``control`` both listed and declared insecure.
    """
    unknown = sorted(set(curve) - set(SOCKET_ROLES))
    if unknown:
        raise ConfigError(f"curve lists unknown socket(s) {unknown}; known: {list(SOCKET_ROLES)}")
    roles = set(curve)
    if insecure_control and "control" in roles:
        raise ConfigError("curve lists 'control' and insecure_control is true: choose one")
    if control and not is_loopback(control) and not insecure_control:
        roles.add("control")
    return frozenset(roles)


# One ThreadAuthenticator per ZeroMQ context (id(context) → (authenticator, users)), shared by reference count.
_AUTH_LOCK = threading.Lock()
_AUTHENTICATORS: dict[int, tuple[ThreadAuthenticator, int]] = {}


def _acquire_authenticator(ctx: zmq.Context[Any], domain: str, folder: str) -> ThreadAuthenticator:
    """The context's running authenticator (started by the first user), with ``folder``'s keys for ``domain``."""
    with _AUTH_LOCK:
        auth, users = _AUTHENTICATORS.get(id(ctx), (None, 0))
        if auth is None:
            auth = ThreadAuthenticator(ctx, log=logging.getLogger("edge.security.zap"))
            try:
                auth.start()
            except zmq.ZMQError as exc:
                auth.stop()
                raise ConfigError(f"cannot start the CurveZMQ authenticator ({exc}): another ZAP handler already "
                                  "serves this ZeroMQ context; give the daemon its own zmq.Context") from exc
        auth.configure_curve(domain=domain, location=folder)  # the folder's *.key files, read now (at start)
        if domain not in auth.certs:  # configure_curve logs a failure instead of raising: admit nobody, loudly
            if users == 0:
                auth.stop()
            raise ConfigError(f"cannot read the authorised client keys in {folder!r} (changed since start?); "
                              "restart the daemon")
        _AUTHENTICATORS[id(ctx)] = (auth, users + 1)
        return auth


def _release_authenticator(ctx: zmq.Context[Any], domain: str) -> None:
    """Forget ``domain``'s keys; stop the context's authenticator when this was its last user."""
    with _AUTH_LOCK:
        auth, users = _AUTHENTICATORS[id(ctx)]
        auth.certs.pop(domain, None)  # zmq.auth has no "unconfigure": drop this daemon's domain
        if users > 1:
            _AUTHENTICATORS[id(ctx)] = (auth, users - 1)
            return
        del _AUTHENTICATORS[id(ctx)]
        auth.stop()


class CurveServer:
    """CurveZMQ for one daemon's sockets (server side).

    Parameters
    ----------
    roles : iterable of str
        Sockets to protect (:func:`curve_sockets`).
    secret_key : path-like or None
        The daemon's ``.key_secret`` file (needed when ``roles`` is not empty).
    authorized_dir : path-like or None
        Folder of the authorised clients' public ``.key`` files (needed when ``roles`` is not empty).
    context : zmq.Context
        The daemon's context (its authenticator is started on the first :meth:`secure`).

    Raises
    ------
    ConfigError
        A protected socket without keys (names ``edge-keys`` and the settings), a missing or malformed key file,
        an empty authorised-keys folder.
    """

    def __init__(self, roles: Iterable[str], secret_key: str | os.PathLike[str] | None,
                 authorized_dir: str | os.PathLike[str] | None, context: zmq.Context[Any]) -> None:
        self.roles = frozenset(roles)
        self.ctx = context
        self.domain = f"raman-edge-{id(self):x}"
        self._auth: ThreadAuthenticator | None = None
        self._pair: KeyPair | None = None
        self._keys: dict[bytes, bool] = {}
        self._authorized_dir = str(authorized_dir or "")
        self.public_key: bytes | None = None
        if not self.roles:
            if secret_key or authorized_dir:
                log.warning("CurveZMQ keys are configured but no socket uses them (daemon setting curve is empty and "
                            "the control endpoint is loopback)")
            return
        if not secret_key or not authorized_dir:
            raise ConfigError(f"CurveZMQ is required on the {', '.join(sorted(self.roles))} socket(s) (a control "
                              "endpoint reachable from the network is never served unauthenticated) but "
                              f"{'curve_secret_key' if not secret_key else 'curve_authorized_dir'} is not set: "
                              f"{_MAKE_KEYS}, then set daemon.curve_secret_key = DAEMON.key_secret and "
                              "daemon.curve_authorized_dir = a folder of client public keys (or --curve-secret-key, "
                              "--curve-authorized-dir)")
        self._pair = load_secret_key(secret_key, "curve_secret_key")
        self._keys = load_authorized_keys(authorized_dir)
        self.public_key = self._pair.public
        log.info("CurveZMQ on the %s socket(s): %d authorised client key(s) in %s, server public key %s",
                 ", ".join(sorted(self.roles)), len(self._keys), authorized_dir, self.public_key.decode())

    def secure(self, sock: zmq.Socket[Any], role: str) -> bool:
        """Make ``sock`` a CURVE server when ``role`` is protected; call it before ``bind``.

        Parameters
        ----------
        sock : zmq.Socket
            A socket of the daemon's context, not yet bound.
        role : str
            Its name (:data:`SOCKET_ROLES`; a socket added later may share one, e.g. a second input).

        Returns
        -------
        bool
            Whether the socket is now a CURVE server.

        Raises
        ------
        ConfigError
            If the authenticator cannot start on this context, or ``role`` is not in :data:`SOCKET_ROLES` (a
            misspelt role must not leave a socket unprotected).
        """
        if role not in SOCKET_ROLES:
            raise ConfigError(f"unknown socket role {role!r} (known: {list(SOCKET_ROLES)}; add a new one to "
                              "edge.security.SOCKET_ROLES)")
        if role not in self.roles or self._pair is None:
            return False
        if self._auth is None:
            self._auth = _acquire_authenticator(self.ctx, self.domain, self._authorized_dir)
        sock.setsockopt(zmq.ZAP_DOMAIN, self.domain.encode())
        sock.setsockopt(zmq.CURVE_SECRETKEY, self._pair.secret)
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        return True

    def close(self) -> None:
        """Release the authenticator (stopped with its last user); call after the protected sockets closed."""
        if self._auth is not None:
            self._auth = None
            _release_authenticator(self.ctx, self.domain)


def curve_client(sock: zmq.Socket[Any], secret_key: str | os.PathLike[str] | None,
                 server_key: str | os.PathLike[str] | None) -> bool:
    """Make ``sock`` a CURVE client (before ``connect``) when keys are given.

    Parameters
    ----------
    sock : zmq.Socket
        A socket not yet connected.
    secret_key : path-like or None
        This client's ``.key_secret`` file (its public key must be in the daemon's ``curve_authorized_dir``).
    server_key : path-like or None
        The daemon's public key (its ``.key`` file).

    Returns
    -------
    bool
        Whether the socket is now a CURVE client (False when both are None).

    Raises
    ------
    EdgeError
        Only one of the two given, or a missing or malformed key file (:class:`ConfigError`).
    """
    if secret_key is None and server_key is None:
        return False
    if secret_key is None or server_key is None:
        raise EdgeError("CurveZMQ needs both curve_secret_key (this client's NAME.key_secret) and curve_server_key "
                        "(the daemon's public DAEMON.key)")
    pair = load_secret_key(secret_key, "curve_secret_key")
    sock.setsockopt(zmq.CURVE_SERVERKEY, load_public_key(server_key, "curve_server_key"))
    sock.setsockopt(zmq.CURVE_PUBLICKEY, pair.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, pair.secret)
    return True
