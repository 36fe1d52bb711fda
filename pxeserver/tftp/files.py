"""What a TFTP file name means: a file under the root, an asset, or a refusal. Pure of sockets.

Names are confined: ``..``, ``.`` and empty components, absolute paths, backslashes, NUL
bytes, control characters and names longer than 255 characters are refused as access
violations; a symlink that leads outside its root is refused too. The virtual folder
``assets/`` is the assets folder (kernels and initrds), so a profile with
``transport: tftp`` can name ``tftp://server/assets/<path>``.

File contents are held in a small cache keyed by inode, size and modification time: boot
storms fetch the same few files, and a bytes object in memory is the cheapest thing to slice
packets from (a memory map would crash the server with SIGBUS if the file were truncated
while mapped). Files too large for the cache are read block by block with ``pread``.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from .packets import ACCESS_VIOLATION, FILE_NOT_FOUND, MAX_FILENAME

ASSETS_PREFIX = "assets/"
CACHE_FILE_MAX = 64 * 1024 * 1024
CACHE_TOTAL_MAX = 256 * 1024 * 1024
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


class Refused(Exception):
    """A request that gets an error packet. ``code`` is the TFTP error code."""

    def __init__(self, code: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message  # what the client is told
        self.reason = reason  # what the log says


def check_name(name: str) -> list[str]:
    """The components of a client's file name, or :class:`Refused` if it is not confined."""
    if len(name) > MAX_FILENAME:
        raise Refused(ACCESS_VIOLATION, "access violation", f"name of {len(name)} characters")
    if _BAD_CHARS.search(name):
        raise Refused(ACCESS_VIOLATION, "access violation", "control character or backslash")
    if name.startswith("/"):
        raise Refused(ACCESS_VIOLATION, "access violation", "absolute path")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise Refused(ACCESS_VIOLATION, "access violation", "'..', '.' or empty path component")
    return parts


def confine(root: Path, parts: list[str]) -> str:
    """The real path of ``parts`` under ``root``, refusing symlinks that leave it."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, *parts))
    if real != real_root and not real.startswith(real_root + os.sep):
        raise Refused(ACCESS_VIOLATION, "access violation", "symlink leads outside the root")
    return real


def locate(tftp_root: Path, assets_dir: Path | None, name: str) -> str:
    """The real path a request names. Raises :class:`Refused`."""
    parts = check_name(name)
    if assets_dir is not None and name.startswith(ASSETS_PREFIX):
        return confine(assets_dir, parts[1:])
    return confine(tftp_root, parts)


@dataclass(frozen=True)
class Content:
    """A file's bytes (``data``), or an open descriptor to pread from when it is too big."""

    size: int
    data: bytes | None
    fd: int | None = None

    def block(self, offset: int, length: int) -> bytes:
        if self.data is not None:
            return self.data[offset : offset + length]
        assert self.fd is not None
        return os.pread(self.fd, length, offset)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)


class FileCache:
    """Recently served files in memory, least recently used out first."""

    def __init__(self, file_max: int = CACHE_FILE_MAX, total_max: int = CACHE_TOTAL_MAX) -> None:
        self.file_max = file_max
        self.total_max = total_max
        self.total = 0
        self._files: OrderedDict[tuple[int, int, int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, path: str) -> Content:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError as exc:
            raise Refused(FILE_NOT_FOUND, "file not found", "no such file") from exc
        except IsADirectoryError as exc:
            raise Refused(FILE_NOT_FOUND, "file not found", "a directory") from exc
        except PermissionError as exc:
            raise Refused(ACCESS_VIOLATION, "access violation", "not readable") from exc
        except OSError as exc:
            raise Refused(FILE_NOT_FOUND, "file not found", exc.strerror or str(exc)) from exc
        try:
            st = os.fstat(fd)
            if not (st.st_mode & 0o170000) == 0o100000:
                raise Refused(FILE_NOT_FOUND, "file not found", "not a regular file")
            if st.st_size > self.file_max:
                keep = fd
                fd = -1
                return Content(st.st_size, None, keep)
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            data = self._get(key)
            if data is None:
                data = _read_all(fd, st.st_size)
                self._put(key, data)
            return Content(len(data), data)
        finally:
            if fd >= 0:
                os.close(fd)

    def _get(self, key: tuple[int, int, int, int]) -> bytes | None:
        with self._lock:
            data = self._files.get(key)
            if data is not None:
                self._files.move_to_end(key)
            return data

    def _put(self, key: tuple[int, int, int, int], data: bytes) -> None:
        with self._lock:
            if key in self._files:
                return
            self._files[key] = data
            self.total += len(data)
            while self.total > self.total_max and len(self._files) > 1:
                _, old = self._files.popitem(last=False)
                self.total -= len(old)


def _read_all(fd: int, size: int) -> bytes:
    chunks = []
    offset = 0
    while True:
        chunk = os.pread(fd, max(size - offset, 65536), offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def netascii(data: bytes) -> bytes:
    """RFC 764 line endings: CR becomes CR NUL, LF becomes CR LF."""
    return data.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")
