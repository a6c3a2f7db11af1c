"""Guards for head files from the control socket (issue #17): where a ``load_head`` path may point, and how
large the arrays inside a head ``.npz`` may inflate, checked BEFORE anything is decompressed.

Written here rather than taken from a library: :mod:`zipfile` and :func:`numpy.lib.format.read_array_header_1_0`
(stdlib and numpy) give the sizes; the policy (one folder, size limits, one message whatever the path) is ours.

- **Heads folder.** A ``load_head`` request naming a path is served only when the path, with every symlink
  resolved (:func:`os.path.realpath`), lies inside the configured heads folder (``[daemon] heads_dir``, by
  default the bundle's folder). Outside it the answer is the same whether or not the path exists: a control
  peer learns nothing about the file system.
- **Decompression bombs.** An ``.npz`` is a zip archive. Before :func:`numpy.load` runs, every member's
  uncompressed size is read from the zip's central directory, and each ``.npy`` header's shape × item size is
  checked against it and against :data:`MAX_HEAD_ARRAY_BYTES`. Python's zip reader never inflates a member
  beyond its declared size, so a head that declares little cannot inflate to much.
"""

from __future__ import annotations

import io
import os
import zipfile
from math import prod
from pathlib import Path

import numpy as np

from .errors import HeadError

__all__ = ["MAX_HEAD_ARRAY_BYTES", "MAX_HEAD_MEMBERS", "check_npz_sizes", "confine_head_path"]

#: Largest uncompressed size of the arrays of one head, all members together (bytes). A 1000-class float32
#: head on a 4096-wide embedding is 16 MB.
MAX_HEAD_ARRAY_BYTES = 32 << 20
#: Most members a head archive may have (meta, labels, weight, weight_scale, bias, and a little room).
MAX_HEAD_MEMBERS = 8


def confine_head_path(path: str, heads_dir: str | os.PathLike[str]) -> str:
    """The real path of ``path`` when it lies inside ``heads_dir`` (symlinks resolved); else refused.

    Parameters
    ----------
    path : str
        The requested head file: absolute, or relative to ``heads_dir``.
    heads_dir : path-like
        The folder heads may be loaded from.

    Returns
    -------
    str
        The resolved path to open.

    Raises
    ------
    HeadError
        The path resolves outside the folder (or is the folder itself), or contains a NUL byte. The message is
        the same whether or not the path exists, and does not show where a symlink leads.
    """
    root = os.path.realpath(heads_dir)
    refused = HeadError(f"head path {path[:200]!r} is not inside the heads folder {str(heads_dir)!r} "
                        "(set [daemon] heads_dir, or send the head inline)")
    if "\0" in path:
        raise refused
    try:
        real = os.path.realpath(os.path.join(root, path))
    except (OSError, ValueError):
        raise refused from None
    if real == root or os.path.commonpath([real, root]) != root:
        raise refused
    return real


def check_npz_sizes(data: bytes, where: str, max_bytes: int = MAX_HEAD_ARRAY_BYTES) -> None:
    """Refuse an ``.npz`` whose arrays would inflate beyond ``max_bytes``, reading only headers.

    Parameters
    ----------
    data : bytes
        The archive.
    where : str
        Name of the source, for messages.
    max_bytes : int
        Limit on the members' uncompressed sizes, all together (bytes).

    Raises
    ------
    HeadError
        Not a zip archive, too many members, a member declared larger than the limit, or a ``.npy`` header whose
        shape needs more bytes than the member declares.
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise HeadError(f"{where}: not a readable head file: {exc}") from exc
    with zf:
        members = zf.infolist()
        if len(members) > MAX_HEAD_MEMBERS:
            raise HeadError(f"{where}: {len(members)} members; a head file has at most {MAX_HEAD_MEMBERS}")
        total = sum(m.file_size for m in members)
        if total > max_bytes:
            raise HeadError(f"{where}: its arrays inflate to {total} bytes; a head may hold at most {max_bytes}")
        for m in members:
            _check_npy_header(zf, m, where)


def _check_npy_header(zf: zipfile.ZipFile, member: zipfile.ZipInfo, where: str) -> None:
    """Refuse a member whose ``.npy`` header declares more data than the member's declared size."""
    name = Path(member.filename).stem
    try:
        with zf.open(member) as f:  # reads (inflates) only as far as the header
            version = np.lib.format.read_magic(f)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = reader(f, max_header_size=10000)
    except Exception as exc:  # zipfile/numpy raise many types for a damaged member
        raise HeadError(f"{where}: array {name!r} is not a readable .npy: {exc}") from exc
    needed = prod(shape) * dtype.itemsize
    if needed > member.file_size:
        raise HeadError(f"{where}: array {name!r} of shape {shape} needs {needed} bytes but its member declares "
                        f"{member.file_size}")
