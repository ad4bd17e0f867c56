"""The textfile source: operators' ``*.prom`` files (node_exporter's textfile
convention: others write ``x.prom.$$`` and rename it), read at each collection.

A collector declares a directory (:class:`~dtagent.snapshot.TextfileRequest`); this
source lists the files whose names end in ``.prom`` and reads each, bounded: a file
that is not a regular file (a FIFO would block a plain ``open`` forever; this one
opens with ``O_NONBLOCK`` and looks before it reads), is larger than ``max_bytes``
(by its size, and again while it is read, should it grow), cannot be read or is not
UTF-8 is refused with an error naming why; the others are read whole. The text goes
into the snapshot unparsed: the collector parses it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

from dtagent.snapshot import Textfile, TextfileListing, TextfileRequest

_CHUNK = 1 << 20


def read_file(path: Path, max_bytes: int) -> Textfile:
    """One file: its text, or why it is refused."""
    name = path.name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        return Textfile(name, error=f"cannot read ({exc.strerror})")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return Textfile(name, st.st_mtime, error="not a regular file")
        if st.st_size > max_bytes:
            return Textfile(name, st.st_mtime,
                            error=f"larger than {max_bytes} bytes ({st.st_size} bytes)")
        data = bytearray()
        while len(data) <= max_bytes:
            chunk = os.read(fd, min(_CHUNK, max_bytes + 1 - len(data)))
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        return Textfile(name, error=f"cannot read ({exc.strerror})")
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        return Textfile(name, st.st_mtime, error=f"larger than {max_bytes} bytes (it grew)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Textfile(name, st.st_mtime, error=f"not UTF-8 (byte {exc.start})")
    return Textfile(name, st.st_mtime, text)


def read_directory(request: TextfileRequest) -> TextfileListing:
    """Every ``*.prom`` file of the request's directory, by name."""
    directory = Path(request.directory)
    try:
        if not stat.S_ISDIR(os.stat(directory).st_mode):
            return TextfileListing(error="not a directory")
        names = sorted(e.name for e in os.scandir(directory) if e.name.endswith(".prom"))
    except FileNotFoundError:
        return TextfileListing(error="no such directory")
    except OSError as exc:
        return TextfileListing(error=f"cannot list ({exc.strerror})")
    return TextfileListing(tuple(read_file(directory / n, request.max_bytes) for n in names))


class LiveTextfiles:
    """The live :class:`~dtagent.snapshot.TextfileSource`: reads the declared
    directories now (an empty directory setting reads nothing)."""

    def textfiles(
        self, requests: Sequence[TextfileRequest]
    ) -> Mapping[TextfileRequest, TextfileListing]:
        return {r: read_directory(r) for r in dict.fromkeys(requests) if r.directory}
