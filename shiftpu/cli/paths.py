"""Output paths of the CLI commands: checked before a command starts its work, written atomically.

A command checks each output option with :func:`check_output_file` or :func:`check_output_folder` before it
does anything slow, so a path that cannot be written fails at once with one line. It then writes through
:func:`atomic_file` or :func:`atomic_folder`: the output goes to a hidden sibling that is renamed into place
only when complete, so a failure (or Ctrl-C) leaves neither a half-written output nor folders made for it.
An output that records its own location is written in place through :func:`folder_in_place`, which puts the
earlier output back when the command fails.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shiftpu.errors import ShiftpuError


class OutputPathError(ShiftpuError):
    """An output path that cannot be written: a file in the way, no permission, or a folder where a file goes."""


def _nearest_existing(folder: Path) -> Path:
    """``folder`` or the closest of its parents that exists (what a ``mkdir -p`` of ``folder`` starts from)."""
    folder = folder.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _check_parent(path: Path, option: str) -> None:
    """Fail unless the folder of ``path`` exists or can be created, and files can be created in it."""
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise OutputPathError(f"{option} {path}: cannot create a folder there, {base} is a file")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputPathError(f"{option} {path}: cannot write in {base} (permission denied)")


def check_output_file(path: Path, option: str) -> None:
    """Fail unless ``path`` can be written as a file (``option`` names the command-line option in the message)."""
    if path.is_dir():
        raise OutputPathError(f"{option} {path}: is a folder; give a file name")
    _check_parent(path, option)


def check_output_folder(path: Path, option: str, marker: str | None = None) -> None:
    """Fail unless ``path`` can be written as a folder.

    With ``marker``, an existing folder is replaced by the new output only if it is empty or holds ``marker``
    (the file that marks an earlier output of the same command), so a mistyped path never deletes unrelated files.
    """
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{option} {path}: exists and is not a folder")
    if marker is not None and path.is_dir() and any(path.iterdir()) and not (path / marker).exists():
        raise OutputPathError(f"{option} {path}: the folder holds other files (no {marker}, so not an earlier "
                              "output): choose another folder or empty it")
    _check_parent(path, option)


def _remove_made(made: list[Path]) -> None:
    """Remove the folders of ``made`` (deepest first) that are still empty."""
    for folder in made:
        try:
            folder.rmdir()
        except OSError:
            pass


@contextmanager
def made_parents(folder: Path) -> Iterator[None]:
    """Create ``folder`` and its missing parents; remove the ones created here if the block fails."""
    made = []  # deepest first
    missing = folder.absolute()
    while not missing.exists() and missing != missing.parent:
        made.append(missing)
        missing = missing.parent
    try:
        for f in reversed(made):
            f.mkdir()
    except OSError as e:
        _remove_made(made)
        raise OutputPathError(f"{folder}: cannot create the folder: {e.strerror or e}") from None
    try:
        yield
    except BaseException:
        _remove_made(made)
        raise


def _write_error(path: Path, e: BaseException, tmp: Path) -> OutputPathError | None:
    """One line for an OSError on the output (``path``, its temporary sibling ``tmp`` or a file inside them);
    None for any other error, which is the command's own."""
    if not isinstance(e, OSError):
        return None
    names = [Path(n) for n in (e.filename, e.filename2) if n is not None]
    if any(n == p or p in n.parents for n in names for p in (path, tmp)):
        return OutputPathError(f"{path}: cannot write: {e.strerror or e}")
    return None


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A hidden temporary sibling of ``path`` (same suffix) to write; renamed to ``path`` when the block ends,
    removed if it fails."""
    tmp = path.with_name(f".{path.name}.partial-{secrets.token_hex(4)}{path.suffix}")
    with made_parents(path.parent):
        try:
            yield tmp
            os.replace(tmp, path)
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            error = _write_error(path, e, tmp)
            if error is None:
                raise
            raise error from None


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """A hidden temporary sibling folder of ``path`` to fill; it replaces ``path`` (and anything there) when the
    block ends, and is removed if the block fails."""
    with made_parents(path.parent):
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
        except OSError as e:
            raise OutputPathError(f"{path}: cannot write: {e.strerror or e}") from None
        try:
            yield tmp
            if path.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
                os.replace(path, old / path.name)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            error = _write_error(path, e, tmp)
            if error is None:
                raise
            raise error from None


@contextmanager
def folder_in_place(path: Path) -> Iterator[Path]:
    """``path`` itself to fill, for an output that records its own location (the demo's report names the compiled
    folder beside it), so it cannot be written under a temporary name. An earlier ``path`` is moved to a hidden
    sibling first; if the block fails, what it wrote is removed and the earlier folder put back, otherwise the
    earlier folder is deleted."""
    with made_parents(path.parent):
        old = None
        try:
            if path.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent)) / path.name
                os.replace(path, old)
            path.mkdir()
        except OSError as e:
            if old is not None and not path.exists():
                os.replace(old, path)
                old.parent.rmdir()
            raise OutputPathError(f"{path}: cannot write: {e.strerror or e}") from None
        try:
            yield path
        except BaseException as e:
            shutil.rmtree(path, ignore_errors=True)
            if old is not None:
                os.replace(old, path)
                old.parent.rmdir()
            error = _write_error(path, e, path)
            if error is None:
                raise
            raise error from None
        if old is not None:
            shutil.rmtree(old.parent, ignore_errors=True)
