"""Output directories and files that are never half-written, never silently replaced, and readable
as the umask says.

A directory output is built in a hidden sibling `.NAME.tmp-<pid>-XXXX` and renamed into place when
complete:
- without `--force` the rename refuses an output that appeared meanwhile (another process won the
  race): OutputExistsError, nothing replaced;
- with `--force` the finished directory and the old output are exchanged in one step
  (`renameat2(RENAME_EXCHANGE)` on Linux), so a kill at any moment leaves either the old or the new
  output in place; where the kernel or file system cannot exchange, the old output is parked in
  `.NAME.old-<pid>-XXXX` for the instant between two renames, and restored by the next run if the
  writer died there;
- `--force` only replaces what a tokprune command writes (a directory holding one of OUTPUT_MARKERS,
  or an empty one), never a user's other files.
Leftovers of a writer that was killed (its pid no longer runs) are removed by the next run on the same
output; leftovers of a live writer are left alone.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from onnx_tokprune.errors import OutputExistsError, first_line

OUTPUT_MARKERS = ("config.json", "model.onnx", "tokprune.json", "bench.json")
"""Files of which every directory tokprune writes holds at least one (checkpoints, artifacts, bench reports)."""

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2


def current_umask() -> int:
    """The process umask (read without changing it for other threads where /proc allows)."""
    try:
        match = re.search(r"^Umask:\s*([0-7]+)", Path("/proc/self/status").read_text(), flags=re.M)
        if match:
            return int(match.group(1), 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def chmod_default(path: str | os.PathLike, directory: bool = False) -> None:
    """Give `path` the mode a plain open()/mkdir() would: 0o666 (files) or 0o777 (dirs) less the umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def _apply_umask(root: Path) -> None:
    """Every file and directory under `root` gets the default mode: libraries writing through temp
    files (safetensors, mkstemp) leave 0600 behind, unreadable for a server running as another user."""
    mask = current_umask()
    for path in root.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def check_output_dir(output: Path, force: bool) -> None:
    """Raise OutputExistsError when `output` exists and may not (or must not) be replaced."""
    output = Path(output)
    if output.is_file() or (output.exists() and not output.is_dir()):
        raise OutputExistsError(f"{output} exists and is not a directory: choose another --output")
    if output.exists() and not force:
        raise OutputExistsError(f"{output} already exists: pass --force to replace it, or choose another --output")
    if output.exists() and force and not _is_tokprune_output(output):
        raise OutputExistsError(
            f"{output} is not a tokprune output (it holds none of {', '.join(OUTPUT_MARKERS)}): "
            "refusing to delete it with --force; choose another --output"
        )
    parent = _existing_ancestor(output.parent)
    if parent is not None and not parent.is_dir():
        raise OutputExistsError(f"{parent} is a file, not a directory: choose another --output")


def check_output_file(path: str | os.PathLike) -> Path:
    """Raise OutputExistsError when a report file cannot be written at `path` (its parent is a file)."""
    path = Path(path)
    if path.is_dir():
        raise OutputExistsError(f"{path} is a directory: give a file name")
    parent = _existing_ancestor(path.parent)
    if parent is not None and not parent.is_dir():
        raise OutputExistsError(f"{parent} is a file, not a directory: choose another path for {path.name}")
    return path


def _existing_ancestor(path: Path) -> Path | None:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return None


def _is_tokprune_output(path: Path) -> bool:
    try:
        names = {p.name for p in path.iterdir()}
    except OSError:
        return False
    return not names or bool(names & set(OUTPUT_MARKERS))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _leftovers(output: Path) -> list[tuple[Path, str, int]]:
    """(path, kind 'tmp'|'old', pid) of hidden siblings a writer of `output` left."""
    pattern = re.compile(rf"^\.{re.escape(output.name)}\.(tmp|old)-(\d+)-")
    found = []
    if output.parent.is_dir():
        for entry in output.parent.iterdir():
            match = pattern.match(entry.name)
            if match and entry.is_dir():
                found.append((entry, match.group(1), int(match.group(2))))
    return found


def recover_output(output: str | os.PathLike) -> list[Path]:
    """Clean up after writers of `output` that died: restore an old output parked between two renames
    if the output is missing, delete their temporary directories. Returns what was removed or restored."""
    output = Path(output)
    touched = []
    for path, kind, pid in _leftovers(output):
        if pid == os.getpid() or _pid_alive(pid):
            continue
        parked = path / output.name
        if kind == "old" and parked.is_dir() and not output.exists():
            os.replace(parked, output)
            touched.append(output)
        shutil.rmtree(path, ignore_errors=True)
        touched.append(path)
    return touched


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """renameat2(2); False when this kernel, libc or file system cannot do it (caller falls back)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return False
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if function(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(dst))


def _install_new(tmp: Path, output: Path) -> None:
    """Rename `tmp` to `output`, which must not exist (or be an empty directory another writer made)."""
    try:
        if _renameat2(tmp, output, _RENAME_NOREPLACE):
            return
    except FileExistsError:
        raise OutputExistsError(f"{output} was created by another process while this one was writing it: nothing replaced") from None
    try:
        os.rename(tmp, output)
    except OSError as e:
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise OutputExistsError(f"{output} was created by another process while this one was writing it: nothing replaced") from None
        raise


def _replace_existing(tmp: Path, output: Path) -> None:
    """Swap the finished `tmp` with the existing `output`, then delete the old one (now at `tmp`)."""
    if _renameat2(tmp, output, _RENAME_EXCHANGE):
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.old-{os.getpid()}-"))
    os.replace(output, old / output.name)
    os.replace(tmp, output)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_output_dir(output: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temp dir beside `output`; on success it becomes `output` (see the module docstring),
    on error or interruption it is removed and `output` is untouched."""
    output = Path(output)
    recover_output(output)
    check_output_dir(output, force)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.tmp-{os.getpid()}-"))
    try:
        chmod_default(tmp, directory=True)
        yield tmp
        _apply_umask(tmp)
        if output.is_dir() and not output.is_symlink():
            if not force:
                raise OutputExistsError(f"{output} was created by another process while this one was writing it: nothing replaced")
            check_output_dir(output, force)
            _replace_existing(tmp, output)
        else:
            if output.is_symlink():
                output.unlink()
            try:
                _install_new(tmp, output)
            except OutputExistsError:
                if not force:
                    raise
                check_output_dir(output, force)
                _replace_existing(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to a temp file beside `path` (mode per the umask), then rename it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        chmod_default(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_json(path: str | os.PathLike, error: type[Exception], missing: str, hint: str) -> Any:
    """The parsed JSON file at `path`. When it is missing: `error(f"{path} {missing}")`; when it cannot
    be read or is not UTF-8 JSON: `error(f"{path} is not valid JSON (<first line of why>): {hint}")`."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path} {missing}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path} is not valid JSON ({first_line(e)}): {hint}") from None


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON (indented, newline-terminated) atomically; see write_text_atomic."""
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")
