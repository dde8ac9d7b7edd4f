"""Files between the harness's machine and its containers, through the engine's archive API
(``PUT``/``GET /containers/ID/archive``): nothing is bind-mounted, so the engine may run on
another machine.

* The harness's own Python (``harness/``, ``wgref/``) goes into every host container at its
  path here, so ``PYTHONPATH=ROOT python3 -m harness.echo`` works there as it does here.
* A file under the output folder that a command names (a word of its argv or environment, or
  the part after ``=``) is copied in before the command runs, at the same path, with its mode;
  a path that does not exist yet (a key log to be written) gets its folder made.
* What the containers wrote under the output folder (key logs, stats) is copied back by
  :meth:`FileSync.pull` at teardown, or one file at a time by :meth:`FileSync.fetch`.
"""

from __future__ import annotations

import functools
import io
import os
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
CODE_FOLDERS = ("harness", "wgref")


class FileError(RuntimeError):
    """A file could not be copied into or out of a container."""


def _add_dir(tar: tarfile.TarFile, path: str) -> None:
    """A folder entry with this machine's mode for it (the engine applies the mode to a
    folder that exists, such as /tmp), 0755 when it does not exist here."""
    info = tarfile.TarInfo(path.lstrip("/"))
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        mode = 0o755
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def _add_file(tar: tarfile.TarFile, path: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(path.lstrip("/"))
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def _parents(path: Path) -> list[Path]:
    """``path`` and its ancestors below ``/``, outermost first."""
    return [p for p in reversed([path, *path.parents]) if p != Path("/")]


@functools.cache
def harness_code(workdir: Path) -> bytes:
    """A gzipped tar of the harness's and wgref's Python files at their paths here, and of
    the folders down to ``workdir``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=5) as tar:
        for parent in dict.fromkeys([*_parents(ROOT), *_parents(workdir)]):
            _add_dir(tar, str(parent))
        for folder in CODE_FOLDERS:
            for path in sorted((ROOT / folder).rglob("*")):
                if "__pycache__" in path.parts:
                    continue
                if path.is_dir():
                    _add_dir(tar, str(path))
                elif path.suffix == ".py":
                    _add_file(tar, str(path), path.read_bytes(), 0o644)
    return buffer.getvalue()


def candidate_paths(words: Iterable[str], cwd: Path) -> list[Path]:
    """Absolute paths that the words may name (the word, or what follows its first ``=``)."""
    out = []
    for word in words:
        for part in (word, word.partition("=")[2]):
            if part and ("/" in part) and "\n" not in part:
                out.append(Path(os.path.normpath(cwd / part)))
    return out


def under(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


class FileSync:
    """The output folder's files of one container: what was copied in, and copying out."""

    def __init__(self, api: Any, container: str, roots: Sequence[Path], cwd: Path) -> None:
        self.api = api
        self.container = container
        self.roots = [Path(os.path.normpath(r)) for r in roots]
        self.cwd = cwd
        self.pushed: dict[Path, tuple[int, int]] = {}  # path -> (mtime_ns, size) copied in
        self.made: set[Path] = set()  # folders made in the container

    def start(self, *, code: bool) -> None:
        """Make the working folder (and copy the harness's code in when ``code``)."""
        if code:
            self._put(harness_code(self.cwd))
            self.made.update(_parents(self.cwd))
        else:
            self.push([], extra_dirs=[self.cwd])

    def forget(self, path: Path) -> None:
        """Never copy ``path`` back (a file already copied and dealt with)."""
        self.pushed[Path(os.path.normpath(self.cwd / path))] = (0, 0)

    def push(self, words: Iterable[str], extra_dirs: Sequence[Path] = ()) -> None:
        """Copy in the files under the roots that ``words`` name (new or changed since the
        last copy); make the folders of those that do not exist here."""
        # Relative folders mean the same as in a command: under the working folder (a
        # relative `--out` such as .ci/run's), not under the container's root.
        dirs: list[Path] = [d for folder in extra_dirs for d in _parents(self.cwd / folder)]
        files: list[tuple[Path, os.stat_result]] = []
        for path in candidate_paths(words, self.cwd):
            if not under(path, self.roots):
                continue
            try:
                stat = path.stat()
            except OSError:
                dirs += _parents(path.parent)
                continue
            if path.is_dir():
                dirs += _parents(path)
                continue
            dirs += _parents(path.parent)
            if self.pushed.get(path) != (stat.st_mtime_ns, stat.st_size):
                files.append((path, stat))
        dirs = [d for d in dict.fromkeys(dirs) if d not in self.made]
        if not dirs and not files:
            return
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for folder in dirs:
                _add_dir(tar, str(folder))
            for path, stat in files:
                _add_file(tar, str(path), path.read_bytes(), stat.st_mode & 0o7777)
        self._put(buffer.getvalue())
        self.made.update(dirs)
        for path, stat in files:
            self.pushed[path] = (stat.st_mtime_ns, stat.st_size)

    def _put(self, data: bytes) -> None:
        try:
            ok = self.api.put_archive(self.container, "/", data)
        except Exception as exc:  # the SDK's errors
            raise FileError(f"cannot copy files into {self.container}: {exc}") from exc
        if not ok:
            raise FileError(f"the engine refused files for {self.container}")

    def _get(self, path: Path) -> tarfile.TarFile | None:
        """The container's ``path`` as a tar (None when it does not exist there)."""
        try:
            stream, _ = self.api.get_archive(self.container, str(path))
            data = b"".join(stream)
        except Exception as exc:  # the SDK's errors: docker.errors.NotFound when missing
            if "404" in str(exc) or "No such" in str(exc) or "not found" in str(exc).lower():
                return None
            raise FileError(f"cannot copy {path} out of {self.container}: {exc}") from exc
        return tarfile.open(fileobj=io.BytesIO(data), mode="r:")

    def pull(self) -> list[Path]:
        """Copy back every file the container has under the roots that did not come from
        here; returns them."""
        out = []
        for root in self.roots:
            tar = self._get(root)
            if tar is None:
                continue
            with tar:
                out += self._extract(tar, root.parent)
        return out

    def fetch(self, path: Path) -> bool:
        """Copy one file back (True when the container has it)."""
        path = Path(os.path.normpath(self.cwd / path))
        tar = self._get(path)
        if tar is None:
            return False
        with tar:
            return bool(self._extract(tar, path.parent))

    def _extract(self, tar: tarfile.TarFile, base: Path) -> list[Path]:
        out = []
        for member in tar:
            name = PurePosixPath(member.name)
            if not member.isfile() or name.is_absolute() or ".." in name.parts:
                continue
            dest = base / name
            if not under(dest, self.roots) or dest in self.pushed:
                continue
            source = tar.extractfile(member)
            if source is None:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, member.mode & 0o777)
            with os.fdopen(fd, "wb") as handle:
                handle.write(source.read())
            os.chmod(dest, member.mode & 0o777)
            out.append(dest)
        return out
