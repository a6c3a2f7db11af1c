"""``edge-keys``: CurveZMQ key pairs for the daemon and its clients (docs/security.md).

Examples
--------
edge-keys new --dir keys --name daemon        # keys/daemon.key (public) + keys/daemon.key_secret (mode 0600)
edge-keys new --dir keys --name ground-station
edge-keys show keys/daemon.key                # the public key, and whether the file holds a secret key

The files are ZeroMQ certificates written by pyzmq's :func:`zmq.auth.create_certificates`; an existing file is
never overwritten (a daemon's clients trust its public key: a silent new pair would lock them out).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import zmq.auth

from .cli_common import CliParser, run_cli
from .errors import ConfigError
from .security import load_public_key, load_secret_key

__all__ = ["main", "new_key_pair"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def new_key_pair(folder: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """Write a new CurveZMQ key pair ``NAME.key`` (public, mode 0644) and ``NAME.key_secret`` (mode 0600).

    The pair is made by :func:`zmq.auth.create_certificates` in a private temporary folder inside ``folder``
    and each file is then created with ``O_EXCL`` (never replacing an existing file, even one made meanwhile).

    Parameters
    ----------
    folder : path-like
        Where to write (created, mode 0700, if missing; its parent must exist).
    name : str
        Base name: letters, digits, ``.``, ``_``, ``-`` (at most 64), e.g. ``daemon``.

    Returns
    -------
    (pathlib.Path, pathlib.Path)
        The public and the secret key file.

    Raises
    ------
    ConfigError
        A bad name, a file of that name already there, or a folder that cannot be made or written.
    """
    if not _NAME.match(name):
        raise ConfigError(f"key name {name!r}: use letters, digits, '.', '_' and '-' (at most 64, no '/')")
    d = Path(folder)
    public, secret = d / f"{name}.key", d / f"{name}.key_secret"
    for p in (public, secret):
        if p.exists() or p.is_symlink():
            raise ConfigError(f"{p} already exists: not overwritten (clients may trust it); choose another --name "
                              "or move the old pair away first")
    try:
        d.mkdir(mode=0o700, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=d, prefix=".edge-keys-") as tmp:  # mode 0700
            made_public, made_secret = zmq.auth.create_certificates(tmp, name)
            for src, dst, mode in ((made_secret, secret, 0o600), (made_public, public, 0o644)):
                fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
                with os.fdopen(fd, "wb") as f:
                    os.fchmod(f.fileno(), mode)  # whatever the umask
                    f.write(Path(src).read_bytes())
    except FileExistsError as exc:
        raise ConfigError(f"{exc.filename} already exists: not overwritten") from exc
    except OSError as exc:
        raise ConfigError(f"cannot write keys in {d}: {exc.strerror or exc}") from exc
    return public, secret


def keys_impl(argv: Sequence[str] | None = None) -> int:
    """Parse the ``edge-keys`` command line and run it; returns the exit code."""
    p = CliParser(prog="edge-keys", description="Make and inspect CurveZMQ key pairs for the daemon and its clients "
                  "(docs/security.md).")
    sub = p.add_subparsers(dest="command", required=True)
    new = sub.add_parser("new", help="write NAME.key (public: give it to the other side) and NAME.key_secret "
                         "(secret, mode 0600: never copy it off this machine)")
    new.add_argument("--dir", required=True, help="folder for the two files (made if missing)")
    new.add_argument("--name", required=True, help="base name, e.g. daemon or ground-station")
    show = sub.add_parser("show", help="print a key file's public key and whether it holds a secret key")
    show.add_argument("file", help="a NAME.key or NAME.key_secret file")
    args = p.parse_args(argv)
    if args.command == "new":
        public, secret = new_key_pair(args.dir, args.name)
        print(f"public key {load_public_key(public).decode()}")
        print(f"wrote {public} (public: copy to the other side) and {secret} (secret, mode 0600)")
        return 0
    path = Path(args.file)
    if path.suffix == ".key_secret":
        print(f"public key {load_secret_key(path).public.decode()} (secret key present: keep this file private)")
    else:
        print(f"public key {load_public_key(path).decode()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``edge-keys``: user errors print one ``error:`` line and exit 1."""
    return run_cli(keys_impl, argv, "edge-keys")


if __name__ == "__main__":
    sys.exit(main())
