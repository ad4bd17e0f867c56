"""Bundles: a recorded (or simulated) host on disk. The format is in docs/bundle.md.

A bundle is a gzip-compressed file of JSON lines. The first line is a header; each
following line is one frame: a timestamp, a full kstat snapshot, the command outputs
recorded at that moment (keyed by argv) and the DTrace aggregation deltas since the
previous frame.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from dtagent.snapshot import KSTAT_TYPE_NAMES, CommandResult, Kstat, KstatSnapshot
from dtagent.zonemap import zones_of

FORMAT = "dtagent-bundle"
VERSION = 1


class BundleError(Exception):
    """A bundle that cannot be read: names the file, the line and the problem."""


@dataclass(slots=True)
class Frame:
    """One moment of a recorded host."""

    time: float
    kstats: list[Kstat] = field(default_factory=list)
    commands: list[CommandResult] = field(default_factory=list)
    dtrace: list[dict[str, Any]] = field(default_factory=list)

    def snapshot(self) -> KstatSnapshot:
        return KstatSnapshot(self.kstats, time=self.time)


@dataclass(slots=True)
class Bundle:
    """A header and its frames, in time order."""

    header: dict[str, Any]
    frames: Sequence[Frame]


def _encode_kstat(ks: Kstat) -> dict[str, Any]:
    return {
        "m": ks.module,
        "i": ks.instance,
        "n": ks.name,
        "c": ks.ks_class,
        "t": ks.ks_type,
        "s": ks.snaptime,
        "d": ks.data,
        **({"cr": ks.crtime} if ks.crtime else {}),
    }


def _decode_kstat(obj: Any, where: str) -> Kstat:
    if not isinstance(obj, dict):
        raise BundleError(f"{where}: a kstat must be an object, got {type(obj).__name__}")
    try:
        module, instance, name = obj["m"], obj["i"], obj["n"]
    except KeyError as exc:
        raise BundleError(f"{where}: kstat without {exc.args[0]!r}") from None
    ks_type = obj.get("t", 1)
    data = obj.get("d", {})
    if (
        not isinstance(module, str)
        or not isinstance(name, str)
        or isinstance(instance, bool)
        or not isinstance(instance, int)
        or ks_type not in KSTAT_TYPE_NAMES
        or not isinstance(data, dict)
    ):
        raise BundleError(f"{where}: malformed kstat {module!r}:{instance!r}:{name!r}")
    for stat, value in data.items():
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise BundleError(
                f"{where}: {module}:{instance}:{name}:{stat} has a "
                f"{type(value).__name__} value; expected a number or a string"
            )
    return Kstat(
        module=module,
        instance=instance,
        name=name,
        ks_class=str(obj.get("c", "")),
        ks_type=ks_type,
        snaptime=int(obj.get("s", 0)),
        crtime=_crtime(obj.get("cr", 0), where),
        data=data,
    )


def _crtime(value: Any, where: str) -> int:
    """ks_crtime (hrtime ns, optional in a bundle): a non-negative integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BundleError(f"{where}: a kstat's 'cr' (creation time) must be a non-negative integer")
    return value


def _encode_command(res: CommandResult) -> dict[str, Any]:
    out: dict[str, Any] = {"argv": list(res.argv), "rc": res.returncode, "stdout": res.stdout}
    if res.stderr:
        out["stderr"] = res.stderr
    if res.error:
        out["error"] = res.error
    return out


def _decode_command(obj: Any, where: str) -> CommandResult:
    if not isinstance(obj, dict) or not isinstance(obj.get("argv"), list):
        raise BundleError(f"{where}: a command record needs an 'argv' list")
    argv = obj["argv"]
    if not argv or not all(isinstance(a, str) for a in argv):
        raise BundleError(f"{where}: 'argv' must be a non-empty list of strings")
    rc = obj.get("rc", 0)
    stdout = obj.get("stdout", "")
    stderr = obj.get("stderr", "")
    error = obj.get("error")
    if not isinstance(rc, int) or not isinstance(stdout, str) or not isinstance(stderr, str):
        raise BundleError(f"{where}: command {argv!r} has a malformed rc/stdout/stderr")
    return CommandResult(
        argv=tuple(argv),
        returncode=rc,
        stdout=stdout,
        stderr=stderr,
        error=error if isinstance(error, str) else None,
    )


def encode_frame(frame: Frame) -> str:
    obj: dict[str, Any] = {"t": frame.time, "kstats": [_encode_kstat(k) for k in frame.kstats]}
    if frame.commands:
        obj["commands"] = [_encode_command(c) for c in frame.commands]
    if frame.dtrace:
        obj["dtrace"] = frame.dtrace
    return json.dumps(obj, separators=(",", ":"))


def decode_frame(line: str, where: str) -> Frame:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise BundleError(f"{where}: a frame must be a JSON object")
    t = obj.get("t")
    if isinstance(t, bool) or not isinstance(t, int | float):
        raise BundleError(f"{where}: frame without a numeric 't' timestamp")
    kstats = obj.get("kstats", [])
    commands = obj.get("commands", [])
    dtrace = obj.get("dtrace", [])
    if not isinstance(kstats, list) or not isinstance(commands, list):
        raise BundleError(f"{where}: 'kstats' and 'commands' must be lists")
    if not isinstance(dtrace, list) or not all(isinstance(d, dict) for d in dtrace):
        raise BundleError(f"{where}: 'dtrace' must be a list of objects")
    return Frame(
        time=float(t),
        kstats=[_decode_kstat(k, where) for k in kstats],
        commands=[_decode_command(c, where) for c in commands],
        dtrace=dtrace,
    )


class BundleWriter:
    """Writes a bundle frame by frame, atomically (a temp file renamed at close)."""

    def __init__(self, path: str | os.PathLike[str], **header: Any) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".bundle-", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self._fh: IO[str] = gzip.open(  # noqa: SIM115 - closed in close()/abort()
            self._tmp, "wt", encoding="utf-8", compresslevel=6
        )
        self._fh.write(json.dumps({"format": FORMAT, "version": VERSION, **header}) + "\n")
        self._last_time: float | None = None
        self.frames = 0

    def write(self, frame: Frame) -> None:
        if self._last_time is not None and frame.time < self._last_time:
            raise ValueError("bundle frames must be written in time order")
        self._last_time = frame.time
        self._fh.write(encode_frame(frame) + "\n")
        self.frames += 1

    def close(self) -> None:
        self._fh.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._fh.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_bundle(path: str | os.PathLike[str], frames: Iterable[Frame], **header: Any) -> int:
    """Write all frames; returns how many were written."""
    with BundleWriter(path, **header) as writer:
        for frame in frames:
            writer.write(frame)
        return writer.frames


def _lines(path: Path) -> Iterator[str]:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            yield from fh
    except FileNotFoundError:
        raise BundleError(f"{path}: no such bundle") from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not a readable bundle ({exc})") from None


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    for line in _lines(p):
        return _check_header(line, p)
    raise BundleError(f"{p}: empty bundle")


def _check_header(line: str, path: Path) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except json.JSONDecodeError:
        raise BundleError(f"{path}:1: header is not JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise BundleError(f"{path}:1: not a {FORMAT} file")
    if header.get("version") != VERSION:
        raise BundleError(
            f"{path}:1: bundle version {header.get('version')!r}; this agent reads {VERSION}"
        )
    return header


def iter_frames(path: str | os.PathLike[str]) -> Iterator[Frame]:
    """The frames of a bundle one at a time, checked as they are read.

    For bundles too large to hold in memory; :func:`read_bundle` reads them all.
    """
    for frame, _line in _frames_and_lines(Path(path)):
        yield frame


def _frames_and_lines(p: Path) -> Iterator[tuple[Frame, str]]:
    header: dict[str, Any] | None = None
    last: float | None = None
    for lineno, line in enumerate(_lines(p), start=1):
        if header is None:
            header = _check_header(line, p)
            continue
        if not line.strip():
            continue
        frame = decode_frame(line, f"{p}:{lineno}")
        if last is not None and frame.time < last:
            raise BundleError(f"{p}:{lineno}: frame time goes backwards")
        last = frame.time
        yield frame, line
    if header is None:
        raise BundleError(f"{p}: empty bundle")


def read_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Read a whole bundle, checking every frame."""
    frames = list(iter_frames(path))
    if not frames:
        raise BundleError(f"{path}: bundle has no frames")
    return Bundle(header=read_header(path), frames=frames)


class PackedFrames(Sequence[Frame]):
    """A bundle's frames kept compressed in memory and decoded when asked for.

    A decoded frame of a large host is tens of megabytes; an hour of them does not
    fit in an agent's memory, their compressed lines do. Every frame is decoded (and
    so checked) once when the bundle is read; afterwards the last frame asked for is
    kept decoded. Times, commands and each frame's running zones are kept decoded,
    and its DTrace deltas packed on their own: a replay hands out every frame's deltas
    (with that frame's zones) without decoding every frame again.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.times: list[float] = []
        self.commands: list[list[CommandResult]] = []
        self.zones: list[dict[int, str]] = []
        self._packed: list[bytes] = []
        self._packed_dtrace: dict[int, bytes] = {}
        self._cached: tuple[int, Frame] | None = None
        self._lock = threading.Lock()
        for frame, line in _frames_and_lines(self.path):
            self.times.append(frame.time)
            self.commands.append(frame.commands)
            self.zones.append(zones_of(frame.kstats))
            if frame.dtrace:
                packed = zlib.compress(json.dumps(frame.dtrace).encode("utf-8"), 1)
                self._packed_dtrace[len(self._packed)] = packed
            self._packed.append(zlib.compress(line.encode("utf-8"), 1))
        if not self._packed:
            raise BundleError(f"{self.path}: bundle has no frames")

    def __len__(self) -> int:
        return len(self._packed)

    def __getitem__(self, index: int) -> Frame:  # type: ignore[override]
        if index < 0:
            index += len(self._packed)
        with self._lock:
            if self._cached is not None and self._cached[0] == index:
                return self._cached[1]
            line = zlib.decompress(self._packed[index]).decode("utf-8")
            frame = decode_frame(line, f"{self.path}: frame {index}")
            self._cached = (index, frame)
            return frame

    def has_dtrace(self, index: int) -> bool:
        return index in self._packed_dtrace

    def dtrace(self, index: int) -> list[dict[str, Any]]:
        """The DTrace delta records of frame ``index`` (checked when the bundle was read)."""
        packed = self._packed_dtrace.get(index)
        if packed is None:
            return []
        records: list[dict[str, Any]] = json.loads(zlib.decompress(packed))
        return records


def read_packed(path: str | os.PathLike[str]) -> Bundle:
    """Read and check a whole bundle, keeping its frames compressed (for replay)."""
    frames = PackedFrames(path)
    return Bundle(header=read_header(path), frames=frames)
