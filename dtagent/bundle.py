"""Bundles: a recorded (or simulated) host on disk. The format is in docs/bundle.md.

A bundle is a gzip-compressed file of JSON lines. The first line is a header; each
following line is one frame: a timestamp, a full kstat snapshot, the command outputs
recorded at that moment (keyed by argv), the operator's plugin runs and textfiles when
they changed, and the DTrace aggregation deltas since the previous frame.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import shutil
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from dtagent.snapshot import (
    KSTAT_TYPE_NAMES,
    CommandResult,
    Kstat,
    KstatSnapshot,
    PluginRun,
    Textfile,
    TextfileListing,
)
from dtagent.zonemap import zones_of

FORMAT = "dtagent-bundle"
VERSION = 1


class BundleError(Exception):
    """A bundle that cannot be read: names the file, the frame (or line) and the problem."""


class BundleUsageError(BundleError):
    """The command line names a bundle or frame that is not there (a missing path, a
    directory, an unreadable file, no such frame): a usage error (exit 2), where a bad
    bundle's content is a runtime one (exit 1)."""


# Limits of what a bundle may hold. kstat integers are 64-bit (sys/kstat.h: the
# KSTAT_DATA_* integer types are at most 64 bits, signed or unsigned); a frame is a few
# levels deep (frame → kstats → kstat → statistics → value; DTrace records carry a key
# list and bucket pairs), so anything deeper than MAX_DEPTH is not a frame.
INT_MIN, INT_MAX = -(1 << 63), (1 << 64) - 1
INSTANCE_MIN, INSTANCE_MAX = -(1 << 31), (1 << 31) - 1
MAX_DEPTH = 8


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


# What can make a value bad that the frame decoder does not see: a lone surrogate
# (only ever a JSON escape: the file is strict UTF-8), an integer of more than 20 digits
# (past 64 bits, and past a double's range when it is long enough). A line without
# either needs no walk over its values; floats are checked as they are parsed.
_HUGE_NUMBER = re.compile(r"[0-9]{21}")


def _suspect(line: str) -> bool:
    if "\\u" in line:  # an escape: walk everything (names may be escaped too)
        return True
    # kstat values and exit statuses are range-checked as they are decoded; the DTrace
    # records (written last by encode_frame) are not, so look at them for huge integers
    at = line.find('"dtrace"')
    return at >= 0 and _HUGE_NUMBER.search(line, at) is not None


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:24]} is not a finite number")
    return value


def parse_json(line: str, where: str, *, walk: bool = False) -> Any:
    """A JSON value whose every string is valid text and every number finite and 64-bit.

    Everything a bundle holds ends up in labels, values and log lines: a lone surrogate
    (``"\\udcff"``) cannot be encoded as UTF-8, NaN or an integer past 64 bits cannot be
    a kstat value, so they are refused here, naming the field, rather than failing a
    scrape later. Values are walked only when the line has something that could be bad
    in it (or ``walk``); nesting is bounded by the frame decoder's structural checks.
    """
    try:
        obj = json.loads(line, parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise BundleError(f"{where}: nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:  # NaN/Infinity, or an integer of thousands of digits
        raise BundleError(f"{where}: not a valid number ({_first_line(exc)})") from None
    problem = check_json(obj) if walk or _suspect(line) else None
    if problem is not None:
        field_path, what = problem
        raise BundleError(f"{where}: field {field_path}: {what}")
    return obj


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _text_problem(s: str) -> str | None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"not valid UTF-8 text (lone surrogate U+{ord(s[exc.start]):04X})"
    return None


def check_json(obj: Any, max_depth: int = MAX_DEPTH) -> tuple[str, str] | None:
    """(field path, problem) of the first bad value in ``obj``, or None.

    Walks iteratively, so depth costs no stack; the path reads like
    ``kstats[3].d.zonename``.
    """
    stack: list[tuple[str, Any, int]] = [("", obj, 0)]
    while stack:
        path, value, depth = stack.pop()
        if isinstance(value, str):
            if (problem := _text_problem(value)) is not None:
                return path or "(top)", problem
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int):
            if not INT_MIN <= value <= INT_MAX:
                return path or "(top)", "integer outside the 64-bit range"
        elif isinstance(value, float):
            if not math.isfinite(value):
                return path or "(top)", f"{value!r} is not a finite number"
        elif isinstance(value, dict | list):
            if depth >= max_depth:
                return path or "(top)", f"nested more than {max_depth} levels deep"
            if isinstance(value, dict):
                for key, item in value.items():
                    if (problem := _text_problem(key)) is not None:
                        return f"{path}.{shown_key(key)}".lstrip("."), "name " + problem
                    stack.append((f"{path}.{key}".lstrip("."), item, depth + 1))
            else:
                for i, item in enumerate(value):
                    stack.append((f"{path}[{i}]", item, depth + 1))
    return None


def shown_key(key: str) -> str:
    return key.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")


@dataclass(slots=True)
class Frame:
    """One moment of a recorded host.

    ``plugins`` and ``textfiles`` are None when the frame records nothing of them
    (they did not change since the last frame that did); otherwise they are the whole
    set at that moment: the latest run of every plugin, every ``*.prom`` file.
    """

    time: float
    kstats: list[Kstat] = field(default_factory=list)
    commands: list[CommandResult] = field(default_factory=list)
    dtrace: list[dict[str, Any]] = field(default_factory=list)
    plugins: list[PluginRun] | None = None
    textfiles: TextfileListing | None = None
    # the replay's accumulated DTrace state after this frame (docs/bundle-dtrace.md)
    checkpoint: dict[str, Any] | None = None

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
        "d": dict(ks.data),  # a StatRow (the live reader's) is no dict to json
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
    ks_class = obj.get("c", "")
    snaptime = obj.get("s", 0)
    data = obj.get("d", {})
    ident = f"kstat {module!r}:{instance!r}:{name!r}"
    if not isinstance(module, str) or not module:
        raise BundleError(f"{where}: field m: {ident}: expected a non-empty module name")
    if not isinstance(name, str):
        raise BundleError(f"{where}: field n: {ident}: expected a string name")
    if not _is_int(instance) or not INSTANCE_MIN <= instance <= INSTANCE_MAX:
        raise BundleError(f"{where}: field i: {ident}: expected a 32-bit integer instance")
    if not isinstance(ks_class, str):
        raise BundleError(f"{where}: field c: {ident}: expected a string class")
    if not _is_int(ks_type) or ks_type not in KSTAT_TYPE_NAMES:
        known = ", ".join(str(k) for k in sorted(KSTAT_TYPE_NAMES))
        raise BundleError(f"{where}: field t: {ident}: expected a kstat type ({known})")
    if not _is_int(snaptime) or not 0 <= snaptime <= INT_MAX:
        raise BundleError(
            f"{where}: field s: {ident}: expected a snaptime in nanoseconds, got {snaptime!r}"
        )
    if not isinstance(data, dict):
        raise BundleError(f"{where}: field d: {ident}: expected an object of statistics")
    for stat, value in data.items():
        kind = type(value)
        if kind is int:
            if not INT_MIN <= value <= INT_MAX:
                raise BundleError(
                    f"{where}: field d.{stat}: {module}:{instance}:{name}:{stat} is outside "
                    "the 64-bit range"
                )
        elif kind is not float and kind is not str:
            raise BundleError(
                f"{where}: field d.{stat}: {module}:{instance}:{name}:{stat} has a "
                f"{kind.__name__} value; expected a number or a string"
            )
    return Kstat(
        module=module,
        instance=instance,
        name=name,
        ks_class=ks_class,
        ks_type=ks_type,
        snaptime=snaptime,
        crtime=_crtime(obj.get("cr", 0), where),
        data=data,
    )


def _crtime(value: Any, where: str) -> int:
    """ks_crtime (hrtime ns, optional in a bundle): a non-negative integer."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT_MAX:
        raise BundleError(
            f"{where}: field cr: expected the kstat's creation time in nanoseconds, "
            f"got {value!r}"
        )
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _with_failure(out: dict[str, Any], stderr: str, error: str | None) -> dict[str, Any]:
    """``out`` with a run's stderr and error, each only when there is one."""
    if stderr:
        out["stderr"] = stderr
    if error:
        out["error"] = error
    return out


def _encode_command(res: CommandResult) -> dict[str, Any]:
    out: dict[str, Any] = {"argv": list(res.argv), "rc": res.returncode, "stdout": res.stdout}
    return _with_failure(out, res.stderr, res.error)


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
    if not _is_int(rc) or not -(1 << 31) <= rc <= 255:
        raise BundleError(f"{where}: field rc: command {argv!r}: expected an exit status")
    if not isinstance(stdout, str) or not isinstance(stderr, str):
        raise BundleError(f"{where}: field stdout/stderr: command {argv!r}: expected strings")
    if error is not None and not isinstance(error, str):
        raise BundleError(f"{where}: field error: command {argv!r}: expected a string")
    return CommandResult(
        argv=tuple(argv),
        returncode=rc,
        stdout=stdout,
        stderr=stderr,
        error=error if isinstance(error, str) else None,
    )


def _encode_plugin(run: PluginRun) -> dict[str, Any]:
    out: dict[str, Any] = {"name": run.name, "rc": run.returncode, "stdout": run.stdout,
                           "duration": run.duration, "finished": run.finished}
    return _with_failure(out, run.stderr, run.error)


def _decode_plugin(obj: Any, where: str) -> PluginRun:
    if not isinstance(obj, dict):
        raise BundleError(f"{where}: a plugin run must be an object")
    name = obj.get("name")
    if not isinstance(name, str) or not name or "/" in name:
        raise BundleError(f"{where}: field name: expected a plugin's file name, got {name!r}")
    rc = obj.get("rc", 0)
    stdout, stderr, error = obj.get("stdout", ""), obj.get("stderr", ""), obj.get("error")
    duration, finished = obj.get("duration", 0.0), obj.get("finished", 0.0)
    ident = f"plugin {name!r}"
    if not _is_int(rc) or not -(1 << 31) <= rc <= 255:
        raise BundleError(f"{where}: field rc: {ident}: expected an exit status")
    if not isinstance(stdout, str) or not isinstance(stderr, str):
        raise BundleError(f"{where}: field stdout/stderr: {ident}: expected strings")
    if error is not None and not isinstance(error, str):
        raise BundleError(f"{where}: field error: {ident}: expected a string")
    for key, value in (("duration", duration), ("finished", finished)):
        if not _is_seconds(value) or value < 0:
            raise BundleError(f"{where}: field {key}: {ident}: expected seconds, got {value!r}")
    return PluginRun(name, rc, stdout, stderr, error, float(duration), float(finished))


def _is_seconds(value: Any) -> bool:
    """A number of seconds a float holds (an integer of hundreds of digits is none)."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and INT_MIN <= value <= INT_MAX)


def _encode_textfiles(listing: TextfileListing) -> dict[str, Any]:
    files: list[dict[str, Any]] = []
    for f in listing.files:
        rec: dict[str, Any] = {"name": f.name}
        if f.mtime is not None:
            rec["mtime"] = f.mtime
        if f.error is not None:
            rec["error"] = f.error
        else:
            rec["text"] = f.text
        files.append(rec)
    out: dict[str, Any] = {"files": files}
    if listing.error is not None:
        out["error"] = listing.error
    return out


def _decode_textfiles(obj: Any, where: str) -> TextfileListing:
    if not isinstance(obj, dict) or not isinstance(obj.get("files", []), list):
        raise BundleError(f"{where}: expected an object with a 'files' list")
    error = obj.get("error")
    if error is not None and not isinstance(error, str):
        raise BundleError(f"{where}: field error: expected a string")
    files: list[Textfile] = []
    for i, rec in enumerate(obj.get("files", [])):
        at = f"{where}.files[{i}]"
        if not isinstance(rec, dict):
            raise BundleError(f"{at}: a textfile must be an object")
        name, mtime, text = rec.get("name"), rec.get("mtime"), rec.get("text", "")
        ferror = rec.get("error")
        if not isinstance(name, str) or not name.endswith(".prom") or "/" in name:
            raise BundleError(f"{at}: field name: expected a *.prom file name, got {name!r}")
        if mtime is not None and not _is_seconds(mtime):
            raise BundleError(f"{at}: field mtime: textfile {name!r}: expected Unix time")
        if not isinstance(text, str):
            raise BundleError(f"{at}: field text: textfile {name!r}: expected a string")
        if ferror is not None and not isinstance(ferror, str):
            raise BundleError(f"{at}: field error: textfile {name!r}: expected a string")
        files.append(Textfile(name, None if mtime is None else float(mtime), text, ferror))
    return TextfileListing(tuple(files), error)


def encode_frame(frame: Frame) -> str:
    obj: dict[str, Any] = {"t": frame.time, "kstats": [_encode_kstat(k) for k in frame.kstats]}
    if frame.commands:
        obj["commands"] = [_encode_command(c) for c in frame.commands]
    if frame.plugins is not None:
        obj["plugins"] = [_encode_plugin(p) for p in frame.plugins]
    if frame.textfiles is not None:
        obj["textfiles"] = _encode_textfiles(frame.textfiles)
    if frame.dtrace:
        obj["dtrace"] = frame.dtrace
    if frame.checkpoint is not None:
        obj["dtrace_checkpoint"] = frame.checkpoint
    return json.dumps(obj, separators=(",", ":"))


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _checkpoint_problem(cp: Any) -> str | None:
    """Where a checkpoint record is not shaped as docs/bundle-dtrace.md says, or None.
    Whether it fits the D scripts' declarations is the accumulator's to check."""
    if not isinstance(cp, dict):
        return ": expected an object"
    if not isinstance(cp.get("basis"), str):
        return ".basis: expected a string"
    zones = cp.get("zones")
    if not isinstance(zones, list) or not all(
            isinstance(z, list) and len(z) == 2 and _is_int(z[0]) and isinstance(z[1], str)
            for z in zones):
        return ".zones: expected a list of [zone id, zonename]"
    for name in ("drops", "errors", "series_dropped", "rejected"):
        counts = cp.get(name)
        if not isinstance(counts, dict) or not all(_is_count(v) for v in counts.values()):
            return f".{name}: expected an object of counts"
    status = cp.get("status")
    if not isinstance(status, dict) or not all(
            isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) for x in v)
            for v in status.values()):
        return ".status: expected an object of [status, message]"
    aggs = cp.get("aggs")
    if not isinstance(aggs, list):
        return ".aggs: expected a list"
    for i, agg in enumerate(aggs):
        at = f".aggs[{i}]"
        if not isinstance(agg, dict) or not isinstance(agg.get("script"), str) \
                or not isinstance(agg.get("agg"), str):
            return f"{at}: expected an object with script and agg"
        seen = agg.get("seen")
        if not isinstance(seen, list) or not all(
                isinstance(s, list) and all(isinstance(x, str) for x in s) for s in seen):
            return f"{at}.seen: expected a list of label lists"
        series = agg.get("series")
        if not isinstance(series, list):
            return f"{at}.series: expected a list"
        for j, row in enumerate(series):
            if not (isinstance(row, list) and len(row) == 6
                    and isinstance(row[0], list) and all(isinstance(x, str) for x in row[0])
                    and (row[1] is None or isinstance(row[1], str))
                    and isinstance(row[2], list) and all(_is_count(n) for n in row[2])
                    and _is_int(row[3]) and _is_number(row[4])
                    and isinstance(row[5], list) and len(row[5]) == 2
                    and all(_is_int(x) for x in row[5])):
                return (f"{at}.series[{j}]: expected [labels, zonename, bucket counts, "
                        "sum, value, [count, total]]")
    return None


def _is_number(value: Any) -> bool:
    return (type(value) is int or type(value) is float) and math.isfinite(value)


def _record_shape(record: Any) -> str | None:
    """Where a DTrace delta record is not an object of scalars, lists of scalars or
    lists of scalar lists (keys, ``[count, total]``, ``[lo, n]`` bucket pairs; see
    docs/bundle-dtrace.md), or None. Their content is the accumulator's to check."""
    if not isinstance(record, dict):
        return ": expected a record object"
    for name, value in record.items():
        kind = type(value)
        if kind is dict:
            return f".{name}: expected a number, a string or a list"
        if kind is not list:
            continue
        for item in value:
            kind = type(item)
            if kind is dict or (
                kind is list and any(type(x) is list or type(x) is dict for x in item)
            ):
                return f".{name}: expected a list of numbers, strings or [lo, n] pairs"
    return None


def decode_frame(line: str, where: str) -> Frame:
    """One frame line, checked completely (``where`` names the frame in errors)."""
    obj = parse_json(line, where)
    if not isinstance(obj, dict):
        raise BundleError(f"{where}: a frame must be a JSON object")
    t = obj.get("t")
    if isinstance(t, bool) or not isinstance(t, int | float):
        raise BundleError(f"{where}: field t: expected the frame time in seconds, got {t!r}")
    kstats = obj.get("kstats", [])
    commands = obj.get("commands", [])
    dtrace = obj.get("dtrace", [])
    if not isinstance(kstats, list):
        raise BundleError(f"{where}: field kstats: expected a list")
    if not isinstance(commands, list):
        raise BundleError(f"{where}: field commands: expected a list")
    if not isinstance(dtrace, list):
        raise BundleError(f"{where}: field dtrace: expected a list of records")
    for i, record in enumerate(dtrace):
        if (problem := _record_shape(record)) is not None:
            raise BundleError(f"{where}: field dtrace[{i}]{problem}")
    checkpoint = obj.get("dtrace_checkpoint")
    if checkpoint is not None and (problem := _checkpoint_problem(checkpoint)) is not None:
        raise BundleError(f"{where}: field dtrace_checkpoint{problem}")
    plugins = obj.get("plugins")
    if plugins is not None and not isinstance(plugins, list):
        raise BundleError(f"{where}: field plugins: expected a list of plugin runs")
    textfiles = obj.get("textfiles")
    return Frame(
        time=float(t),
        kstats=[_decode_kstat(k, f"{where}: kstats[{i}]") for i, k in enumerate(kstats)],
        commands=[_decode_command(c, f"{where}: commands[{i}]") for i, c in enumerate(commands)],
        dtrace=dtrace,
        plugins=None if plugins is None else [
            _decode_plugin(p, f"{where}: plugins[{i}]") for i, p in enumerate(plugins)],
        textfiles=None if textfiles is None else _decode_textfiles(
            textfiles, f"{where}: textfiles"),
        checkpoint=checkpoint,
    )


# (frame index, its DTrace deltas, its running zones) → its checkpoint record or None
Checkpoints = Callable[[int, list[dict[str, Any]], dict[int, str]], dict[str, Any] | None]


class BundleWriter:
    """Writes a bundle frame by frame, atomically (a temp file renamed at close).

    The header is written last, as the file's first gzip member (RFC 1952 2.2: a gzip
    file is a series of members, read as one stream), so it can say what the frames
    hold (``dtrace_scripts``, the D scripts their DTrace records name; ``plugins`` and
    ``textfiles``, whether any frame records them): a replay can then start on the
    first frame while the rest is still being checked.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        checkpoints: Checkpoints | None = None,
        **header: Any,
    ) -> None:
        """``checkpoints``: called with each frame's index, DTrace deltas and running
        zones; what it returns (if not None) is written as the frame's checkpoint."""
        self._checkpoints = checkpoints
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._header = {"format": FORMAT, "version": VERSION, **header}
        self._tmp = self._temp()
        self._frames_tmp = self._temp()
        self._fh: IO[str] = gzip.open(  # noqa: SIM115 - closed in close()/abort()
            self._frames_tmp, "wt", encoding="utf-8", compresslevel=6
        )
        self._last_time: float | None = None
        self._scripts: set[str] = set()
        self._plugins = self._textfiles = False
        self.frames = 0

    def _temp(self) -> Path:
        fd, tmp = tempfile.mkstemp(prefix=".bundle-", dir=self.path.parent)
        os.close(fd)
        return Path(tmp)

    def write(self, frame: Frame) -> None:
        if self._last_time is not None and frame.time < self._last_time:
            raise ValueError("bundle frames must be written in time order")
        self._last_time = frame.time
        if self._checkpoints is not None:
            frame.checkpoint = self._checkpoints(self.frames, frame.dtrace,
                                                 zones_of(frame.kstats))
        self._fh.write(encode_frame(frame) + "\n")
        if frame.dtrace:
            self._scripts.update(recorded_scripts(frame.dtrace))
        self._plugins |= frame.plugins is not None
        self._textfiles |= frame.textfiles is not None
        self.frames += 1

    def close(self) -> None:
        self._fh.close()
        header = {**self._header, "dtrace_scripts": sorted(self._scripts),
                  "plugins": self._plugins, "textfiles": self._textfiles}
        try:
            with self._tmp.open("wb") as out:
                out.write(gzip.compress((json.dumps(header) + "\n").encode("utf-8"), 6))
                with self._frames_tmp.open("rb") as frames:
                    shutil.copyfileobj(frames, out, 1 << 20)
            os.replace(self._tmp, self.path)
        finally:
            self._frames_tmp.unlink(missing_ok=True)
            self._tmp.unlink(missing_ok=True)

    def abort(self) -> None:
        self._fh.close()
        self._frames_tmp.unlink(missing_ok=True)
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
        fh = gzip.open(path, "rt", encoding="utf-8")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise BundleUsageError(f"{path}: no such bundle") from None
    except IsADirectoryError:
        raise BundleUsageError(f"{path}: is a directory, not a bundle") from None
    except OSError as exc:
        raise BundleUsageError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        with fh:
            yield from fh
    except IsADirectoryError:
        raise BundleUsageError(f"{path}: is a directory, not a bundle") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise BundleError(f"{path}: not a readable bundle ({_first_line(exc)})") from None
    except UnicodeDecodeError as exc:
        raise BundleError(
            f"{path}: not a readable bundle (not UTF-8 text at byte {exc.start} of a line)"
        ) from None


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    for line in _lines(p):
        return _check_header(line, p)
    raise BundleError(f"{p}: empty bundle")


def _check_header(line: str, path: Path) -> dict[str, Any]:
    header = parse_json(line, f"{path}: header (line 1)", walk=True)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise BundleError(f"{path}: header (line 1): not a {FORMAT} file")
    if header.get("version") != VERSION:
        raise BundleError(
            f"{path}: header (line 1): bundle version {header.get('version')!r}; "
            f"this agent reads {VERSION}"
        )
    scripts = header.get("dtrace_scripts")
    if scripts is not None and (
        not isinstance(scripts, list) or not all(isinstance(x, str) for x in scripts)
    ):
        raise BundleError(
            f"{path}: header (line 1): field dtrace_scripts: expected a list of D script names"
        )
    for key in ("plugins", "textfiles"):
        if key in header and not isinstance(header[key], bool):
            raise BundleError(f"{path}: header (line 1): field {key}: expected true or false")
    return header


@dataclass(frozen=True, slots=True)
class Contents:
    """What a bundle's frames hold, as its header says: the D scripts their records
    name, whether any frame records plugin runs, textfiles."""

    dtrace_scripts: frozenset[str]
    plugins: bool
    textfiles: bool


def header_contents(header: dict[str, Any]) -> Contents | None:
    """What the header says the frames hold (None: an older bundle whose header does
    not say; every frame must then be read to know)."""
    scripts = header.get("dtrace_scripts")
    plugins, textfiles = header.get("plugins"), header.get("textfiles")
    if not isinstance(scripts, list) or not isinstance(plugins, bool) or \
            not isinstance(textfiles, bool):
        return None
    return Contents(frozenset(scripts), plugins, textfiles)


def iter_frames(path: str | os.PathLike[str]) -> Iterator[Frame]:
    """The frames of a bundle one at a time, checked as they are read.

    For bundles too large to hold in memory; :func:`read_bundle` reads them all.
    """
    for frame, _line in _frames_and_lines(Path(path)):
        yield frame


def _frames_and_lines(p: Path) -> Iterator[tuple[Frame, str]]:
    header: dict[str, Any] | None = None
    last: float | None = None
    index = 0
    for lineno, line in enumerate(_lines(p), start=1):
        if header is None:
            header = _check_header(line, p)
            continue
        if not line.strip():
            continue
        where = f"{p}: frame {index} (line {lineno})"
        frame = decode_frame(line, where)
        if last is not None and frame.time < last:
            raise BundleError(f"{where}: field t: frame time goes backwards")
        last = frame.time
        index += 1
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
    so checked) once when it is read; afterwards the last frame asked for is kept
    decoded. Times, commands, plugin runs, textfiles and each frame's running zones are kept
    decoded, and its DTrace deltas packed on their own: a replay hands out every
    frame's deltas (with that frame's zones) without decoding every frame again.

    ``upto``: frames after that index are neither read nor checked (a replay pinned
    to a frame needs only it and the frames before it).

    ``background``: only the first frame is read before this returns; the others are
    read and checked by a thread while the first is served, and appear as they are
    checked (``len`` grows; ``complete`` is set at the end). A bad frame found that
    way ends the reading there: ``error`` says what was wrong and the frames before it
    stay. Otherwise every frame is read and checked here, and a bad one raises.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, background: bool = False, upto: int | None = None
    ) -> None:
        self.path = Path(path)
        self.times: list[float] = []
        self.commands: list[list[CommandResult]] = []
        self.plugins: list[list[PluginRun] | None] = []
        self.textfiles: list[TextfileListing | None] = []
        self.zones: list[dict[int, str]] = []
        self._packed: list[bytes] = []
        self._packed_dtrace: dict[int, bytes] = {}
        self._packed_checkpoints: dict[int, bytes] = {}
        # their frames, in order: appended as frames are checked, so a replay can read
        # it while the background check adds to it (a dict cannot be iterated then)
        self._checkpoint_frames: list[int] = []
        # scripts named by any DTrace record: what ran when the bundle was recorded
        self.dtrace_scripts: set[str] = set()
        self._cached: tuple[int, Frame] | None = None
        self._lock = threading.Lock()
        self.complete = threading.Event()
        self.error: BundleError | None = None
        self.background = background
        lines = _frames_and_lines(self.path)
        if not background:
            for frame, line in lines:
                self._add(frame, line)
                if upto is not None and len(self._packed) > upto:
                    break  # frames after ``upto`` are not needed: not read, not checked
            self._done()
            return
        first = next(lines, None)
        if first is None:
            raise BundleError(f"{self.path}: bundle has no frames")
        self._add(*first)
        threading.Thread(
            target=self._read_rest, args=(lines,), name="dtagent-bundle-check", daemon=True
        ).start()

    def _add(self, frame: Frame, line: str) -> None:
        index = len(self._packed)
        if frame.dtrace:
            self.dtrace_scripts.update(recorded_scripts(frame.dtrace))
            packed = zlib.compress(json.dumps(frame.dtrace).encode("utf-8"), 1)
            self._packed_dtrace[index] = packed
        if frame.checkpoint is not None:
            self._packed_checkpoints[index] = zlib.compress(
                json.dumps(frame.checkpoint).encode("utf-8"), 1)
            self._checkpoint_frames.append(index)
        self.commands.append(frame.commands)
        self.plugins.append(frame.plugins)
        self.textfiles.append(frame.textfiles)
        self.zones.append(zones_of(frame.kstats))
        self._packed.append(zlib.compress(line.encode("utf-8"), 1))
        self.times.append(frame.time)  # last: a frame whose time is seen is all there

    def _done(self) -> None:
        if not self._packed:
            raise BundleError(f"{self.path}: bundle has no frames")
        self.complete.set()

    def _read_rest(self, lines: Iterator[tuple[Frame, str]]) -> None:
        # Paced: after each frame the thread rests three times as long as the frame
        # took, so it uses at most a quarter of a CPU and leaves the interpreter to the
        # threads that serve (a 2,000-zone frame's json.loads holds the GIL for 0.3 s
        # or more, and every slice the HTTP loop writes waits for the GIL).
        try:
            started = time.monotonic()
            for frame, line in lines:
                self._add(frame, line)
                took = time.monotonic() - started
                time.sleep(min(3 * took, 5.0))
                started = time.monotonic()
        except BundleError as exc:
            self.error = exc
        except Exception as exc:  # never a traceback from the checking thread
            self.error = BundleError(f"{self.path}: {type(exc).__name__}: {exc}")
        self.complete.set()

    def __len__(self) -> int:
        return len(self.times)

    def __getitem__(self, index: int) -> Frame:  # type: ignore[override]
        if index < 0:
            index += len(self.times)
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

    def checkpoints(self) -> list[int]:
        """The frames that hold a checkpoint record, in order."""
        return list(self._checkpoint_frames)

    def checkpoint(self, index: int) -> dict[str, Any] | None:
        """Frame ``index``'s checkpoint record (checked when the bundle was read)."""
        packed = self._packed_checkpoints.get(index)
        if packed is None:
            return None
        state: dict[str, Any] = json.loads(zlib.decompress(packed))
        return state


def recorded_scripts(records: Iterable[dict[str, Any]]) -> set[str]:
    """The D scripts that DTrace delta records name (aggregations, status, errors)."""
    return {r["script"] for r in records if isinstance(r.get("script"), str)}


def bundle_scripts(bundle: Bundle) -> set[str]:
    """Every D script a bundle's DTrace deltas name: the scripts that really ran."""
    if isinstance(bundle.frames, PackedFrames):
        return set(bundle.frames.dtrace_scripts)
    return {s for f in bundle.frames for s in recorded_scripts(f.dtrace)}


def read_packed(
    path: str | os.PathLike[str], *, background: bool = False, upto: int | None = None
) -> Bundle:
    """Read and check a bundle, keeping its frames compressed (for replay); with
    ``background``, only its header and first frame before returning; with ``upto``,
    only the frames up to that index (see :class:`PackedFrames`)."""
    header = read_header(path)
    frames = PackedFrames(path, background=background, upto=upto)
    return Bundle(header=header, frames=frames)
