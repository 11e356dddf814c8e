"""Where the ``ctxflow`` command writes: checked before any work, written whole or not at all.

Every output path is checked before a command does its work, so a long
replay never ends in an error about where to put its result: a folder, a
missing folder, a device, or a path that another option already names is
refused (exit 2) while nothing has been written.

Files are written under a hidden temporary name beside the target
(``.<name>.<random>``) and renamed onto their targets together when the
command succeeds; on an error or a signal they are removed. A temporary file
is created with mode 0666 like any new file, so the umask applies (0644 under
the usual 022); replacing a file keeps that file's mode.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from ctxflow import _critical
from ctxflow.errors import FormatError, StoreError, StoreURLError
from ctxflow.persistence import BaseStore
from ctxflow.stores import StoreURL, parse_store_url

__all__ = ["StagedFiles", "check_distinct", "open_store_option", "output_target", "store_url"]


def store_url(value: str, option: str = "--store") -> StoreURL:
    """The store ``value`` names (see :func:`ctxflow.stores.open_store`), checked, not opened.

    A bad or unsupported URL is a ``StoreURLError`` naming the option; a SQLite
    path must not be a folder. Nothing is created.
    """
    try:
        url = parse_store_url(value)
    except StoreURLError as exc:
        raise StoreURLError(f"{option}: {exc.message}", rule=exc.rule, **exc.details) from None
    if url.path is not None and url.path.is_dir():
        raise StoreError(
            f"{option} must name a file, not a folder (got {value!r})",
            rule="store_is_folder",
            where=value,
        )
    return url


def open_store_option(
    url: StoreURL, option: str = "--store", *, read_only: bool = False
) -> BaseStore:
    """Open the store ``url`` names; a backend this build lacks is refused naming the option."""
    try:
        return url.open(read_only=read_only)
    except StoreURLError as exc:
        raise StoreURLError(f"{option}: {exc.message}", rule=exc.rule, **exc.details) from None


def _refuse(option: str, value: str, reason: str, rule: str) -> FormatError:
    return FormatError(
        f"{option} {value!r} cannot be written: {reason}", rule=rule, where=value, option=option
    )


def output_target(value: str, option: str) -> Path:
    """The file ``value`` names as an output; FormatError when it cannot be written there."""
    if not value:
        raise _refuse(option, value, "it names no file", "output_path")
    path = Path(value)
    if path.is_symlink():
        # Write where the link points, leaving the link in place.
        path = Path(os.path.realpath(path))
    if path.is_dir():
        raise _refuse(option, value, "it is a folder", "output_is_folder")
    folder = path.parent
    if not folder.exists():
        raise _refuse(option, value, f"its folder {str(folder)!r} does not exist", "output_folder")
    if not folder.is_dir():
        raise _refuse(option, value, f"{str(folder)!r} is not a folder", "output_folder")
    if path.exists() and not path.is_file():
        raise _refuse(option, value, "it is not a regular file", "output_not_file")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _refuse(
            option, value, f"no permission to write in {str(folder)!r}", "output_unwritable"
        )
    return path


def check_distinct(outputs: Mapping[str, Path], inputs: Mapping[str, Path]) -> None:
    """FormatError when two outputs, or an output and an input, are the same file."""
    seen: dict[str, str] = {}
    for option, path in inputs.items():
        seen.setdefault(os.path.realpath(path), option)
    for option, path in outputs.items():
        key = os.path.realpath(path)
        other = seen.get(key)
        if other is not None:
            raise FormatError(
                f"{option} must name a file of its own (got {str(path)!r}, which {other} "
                "names too)",
                rule="output_clash",
                where=str(path),
                option=option,
            )
        seen[key] = option


class StagedFiles:
    """Temporary files beside their targets: renamed onto them together on success, or removed.

    Use as a context manager; :meth:`add` creates one temporary file and
    returns its path. Leaving the block normally renames every file (inside a
    critical section, so a signal does not split the set); leaving it with an
    exception, a signal's included, removes them.
    """

    def __init__(self) -> None:
        self._files: list[tuple[Path, Path, str]] = []

    def add(self, target: Path, option: str) -> Path:
        """Create an empty temporary file for ``target``; return its path."""
        for _ in range(100):
            temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
            # Created and recorded in one section: a signal cannot leave it unrecorded.
            with _critical.section():
                try:
                    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                except FileExistsError:
                    continue
                except OSError as exc:
                    raise _refuse(
                        option, str(target), exc.strerror or str(exc), "output_unwritable"
                    ) from None
                os.close(fd)
                self._files.append((temp, target, option))
            return temp
        raise _refuse(option, str(target), "no free temporary name", "output_unwritable")

    def commit(self) -> None:
        """Rename every temporary file onto its target (those left are removed on failure)."""
        with _critical.section():
            try:
                while self._files:
                    temp, target, option = self._files[0]
                    try:
                        if target.is_file():
                            os.chmod(temp, stat.S_IMODE(target.stat().st_mode))
                        os.replace(temp, target)
                    except OSError as exc:
                        raise _refuse(
                            option, str(target), exc.strerror or str(exc), "output_unwritable"
                        ) from None
                    self._files.pop(0)
            finally:
                self.discard()

    def discard(self) -> None:
        """Remove every temporary file not renamed yet."""
        with _critical.section():
            for temp, _, _ in self._files:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
            self._files.clear()

    def __enter__(self) -> StagedFiles:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()
