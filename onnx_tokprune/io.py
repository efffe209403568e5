"""Atomic output directories: built beside the target, renamed into place only when complete."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class OutputExistsError(FileExistsError):
    """The output exists and overwriting was not asked for."""


def check_output_dir(output: Path, force: bool) -> None:
    if output.exists() and not force:
        raise OutputExistsError(f"{output} already exists: pass --force to replace it, or choose another --output")


@contextmanager
def atomic_output_dir(output: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temp dir beside `output`; on success it replaces `output`, on error it is removed."""
    output = Path(output)
    check_output_dir(output, force)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.tmp"))
    try:
        yield tmp
        if output.is_dir() and not output.is_symlink():
            old = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.old"))
            os.replace(output, old / output.name)
            os.replace(tmp, output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if output.exists() or output.is_symlink():
                output.unlink()
            os.replace(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
