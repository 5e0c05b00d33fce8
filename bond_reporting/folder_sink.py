"""The folder sink (``--output-dir``): all or nothing.

Every file of a run — ``<id>.json`` (exactly the bytes Socrata would receive), ``<id>.csv`` (for
people, formula cells neutralised) and any extra file registered with :meth:`FolderSink.add_file`
(e.g. the run report) — is written to a staging folder beside the target,
``<parent>/.<name>.staging-<pid>-<random>``, which starts as a hard-linked copy of the target's
current content (so datasets left out with ``--only`` stay as they were). Only when every file is
complete is the staging folder put in place, with one atomic ``renameat2(RENAME_EXCHANGE)`` of the
two folders (Linux); where the OS or filesystem cannot exchange (or the target is a mount point),
each file is renamed over its target instead, after all of them are complete.

A failed or killed run therefore leaves the previous folder content whole. A live run holds an
``flock`` on its staging folder (as ``storage.temp_file`` does on its files), so the next run's
:meth:`FolderSink.begin` tells a killed run's staging folder (lock free) from a live one and removes
it, as well as the ``.<file>.<hex>.tmp`` files of per-file writers killed inside the folder.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import glob
import logging
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pandas as pd

from bond_reporting import render
from bond_reporting.errors import ConfigError, PublishError

log = logging.getLogger(__name__)

Content = bytes | str | Iterable[bytes] | Callable[[], bytes | str]

_OLD_TMP = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")  # what earlier versions' per-file writer left behind


@dataclass
class FolderSink:
    """Writes every dataset of a run into ``directory``, all or nothing (see the module docstring).

    ``publish_all`` calls :meth:`begin`, :meth:`publish` per dataset, then :meth:`commit` (or
    :meth:`abort` on failure). ``add_file(name, content)`` adds a file to the same commit; a
    callable content is called at commit time, after every dataset is staged.
    """

    atomic: ClassVar[bool] = True  # nothing is visible before commit (publish_all reads this)
    directory: Path
    chunk_size: int = render.DEFAULT_RENDER_ROWS  # kept for callers; rendering picks its own piece size
    staging: Path | None = field(default=None, init=False)
    _extras: dict[str, Content] = field(default_factory=dict, init=False)
    _lock: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        """Refuse a destination that exists and is not a folder (it would be moved aside, not written into)."""
        if self.directory.exists() and not self.directory.is_dir():
            raise ConfigError(
                f"--output-dir {self.directory} is a file, not a folder: give a folder (created when missing)"
            )

    @property
    def description(self) -> str:
        return f"folder {self.directory}"

    # -- lifecycle ------------------------------------------------------------------------------

    def begin(self) -> None:
        """Remove stale staging folders and temporaries of killed runs; start a staging folder."""
        target = self._target()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._remove_stale(target)
            staging = target.parent / f".{target.name}.staging-{secrets.token_hex(6)}"
            staging.mkdir()
            self._lock = _lock_folder(staging)
            self.staging = staging
            if target.is_dir():
                shutil.copytree(target, staging, symlinks=True, copy_function=_link_or_copy, dirs_exist_ok=True)
                shutil.copymode(target, staging)
        except OSError as exc:
            raise PublishError(f"cannot prepare {self.directory}: {_os_text(exc)}") from None

    def publish(self, dataset_id: str, frame: pd.DataFrame) -> None:
        """Stage ``<id>.json`` and ``<id>.csv``; nothing is visible in the folder before commit."""
        if self.staging is None:
            self.begin()
        try:
            columns = render.prepare(frame)  # factorized once for both files
            self._write(f"{dataset_id}.json", render.json_array(frame, columns=columns))
            self._write(f"{dataset_id}.csv", render.csv_lines(frame, columns=columns))
        except OSError as exc:
            raise PublishError(f"{dataset_id}: cannot write to {self.directory}: {_os_text(exc)}") from None

    def add_file(self, name: str, content: Content) -> None:
        """Add ``name`` (a plain file name) to this run's commit: bytes, text (UTF-8), an iterable of
        bytes, or a callable returning bytes/text that is called at commit time."""
        if not name or name != Path(name).name or name.startswith("."):
            raise ValueError(f"not a plain file name: {name!r}")
        self._extras[name] = content

    def commit(self) -> None:
        """Write the extra files, then put the staged folder in place (atomically where possible)."""
        if self.staging is None:
            self.begin()
        assert self.staging is not None
        try:
            for name, content in self._extras.items():
                value = content() if callable(content) else content
                if isinstance(value, str):
                    value = value.encode("utf-8")
                self._write(name, [value] if isinstance(value, bytes) else value)
            self._swap(self._target(), self.staging)
            self._unlock()
        except OSError as exc:
            self.abort()
            raise PublishError(f"cannot write to {self.directory}: {_os_text(exc)}") from None
        except BaseException:
            self.abort()
            raise
        self.staging = None

    def abort(self) -> None:
        """Drop the staging folder: the target keeps its previous content."""
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
        self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    # -- helpers --------------------------------------------------------------------------------

    def _target(self) -> Path:
        return Path(self.directory).resolve()

    def _write(self, name: str, pieces: Iterable[bytes]) -> None:
        assert self.staging is not None
        path = self.staging / name
        path.unlink(missing_ok=True)  # a hard link to the live file: never write through it
        with open(path, "xb") as out:  # the process umask decides the mode, as for any new file
            out.writelines(pieces)

    def _remove_stale(self, target: Path) -> None:
        for path in target.parent.glob(glob.escape(f".{target.name}.staging-") + "*"):
            if not path.is_dir() or path.is_symlink():
                continue
            try:
                fd = _lock_folder(path, wait=False)
            except OSError:
                continue  # a live run's staging folder
            try:
                log.info("removing %s, left by a run that did not finish", path)
                shutil.rmtree(path, ignore_errors=True)
            finally:
                os.close(fd)
        if target.is_dir():
            for path in target.iterdir():
                if _OLD_TMP.match(path.name) and path.is_file():
                    path.unlink(missing_ok=True)

    def _swap(self, target: Path, staging: Path) -> None:
        if not target.exists():
            staging.rename(target)
            return
        if _exchange(staging, target):
            shutil.rmtree(staging, ignore_errors=True)  # now the previous content
            return
        # No atomic exchange here: every file is complete, rename each over its target.
        for path in sorted(staging.iterdir()):
            os.replace(path, target / path.name)
        shutil.rmtree(staging, ignore_errors=True)


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def _lock_folder(path: Path, *, wait: bool = True) -> int:
    """An open descriptor of folder ``path`` holding an exclusive flock (OSError if ``wait`` is False
    and another process holds it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError:
        os.close(fd)
        raise
    return fd


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux renameat2); False where unsupported (then nothing moved)."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EXDEV, errno.EBUSY, errno.ENOTSUP, errno.EPERM):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _os_text(exc: OSError) -> str:
    return f"{exc.strerror or type(exc).__name__}" + (f" ({exc.filename})" if exc.filename else "")
