"""Where an import's files come from: a server folder, a zip, uploaded files. The first stage of an ingest.

Each source is a list of `SourceFile`s (a name as the user knows it and a way to read the bytes). What a source
refuses (a hidden file, a link out of the allowed folders, a zip entry with an unsafe path or over the size cap)
comes back as an entry the import lists as skipped, with its reason: nothing is left out in silence.
"""

from __future__ import annotations

import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from ..errors import BadImage, PirlError

MAX_ZIP_FILES = 200_000
MAX_ZIP_BYTES = 50 * 1024**3


@dataclass
class SourceFile:
    name: str  # relative path as the user knows it ("benign/benign (1).png")
    read: Callable[[], bytes]


def allowed_roots() -> list[Path]:
    """Folders on this machine that imports may read: PIRL_DATA_ROOTS (os.pathsep-separated). None set:
    importing a server folder from the browser is off; the command line imports what it is given."""
    raw = os.environ.get("PIRL_DATA_ROOTS", "")
    return [Path(r).expanduser().resolve() for r in raw.split(os.pathsep) if r.strip()]


def max_file_bytes() -> int:
    """The largest single file (or zip member) an import reads: PIRL_MAX_FILE_MB, default 512 MB."""
    return int(float(os.environ.get("PIRL_MAX_FILE_MB") or 512) * 1024**2)


def _mb(n: int) -> str:
    return f"{n / 1024**2:.3g} MB"


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def _refused(name: str, reason: str) -> SourceFile:
    """An entry the import lists as skipped, with its reason, instead of reading it."""
    def read() -> bytes:
        raise BadImage(reason)
    return SourceFile(name, read)


class FolderListing:
    """Every file under a folder, in name order, listed as it is read: one folder's names at a time, so an archive
    of millions of files costs no memory per file. Iterate it again to list it again; `len()` counts the files
    with a walk of its own."""

    def __init__(self, folder: Path, roots: list[Path], include_hidden: bool):
        self.folder, self.roots, self.include_hidden = folder, roots, include_hidden
        self._count: int | None = None

    def __iter__(self) -> Iterator[SourceFile]:
        return _walk(self.folder, self.folder, self.roots, max_file_bytes(), self.include_hidden)

    def __len__(self) -> int:
        if self._count is None:
            self._count = sum(1 for _ in self)
        return self._count


def folder_source(folder: str | Path, check_roots: bool = True, include_hidden: bool = False) -> FolderListing:
    """Every file under `folder`, in name order (see `FolderListing`). Where PIRL_DATA_ROOTS is set, the folder and
    every file in it (links resolved) must lie inside those roots; what resolves outside is refused by name.
    `check_roots` (the browser): with no roots set, refuse. Hidden files and folders, links to folders, broken
    links, link loops, special files, unreadable folders and files over the size cap come back as entries that
    the import lists as skipped, with the reason: nothing is left out in silence."""
    roots = allowed_roots()
    folder = Path(folder).expanduser().resolve()
    if check_roots and not roots:
        raise PirlError("Importing a folder on the server is off. To turn it on, set PIRL_DATA_ROOTS to the "
                        "folders it may read (separated by ':') and restart the app; or upload the files.")
    if roots and not _inside(folder, roots):
        raise PirlError(f"{folder} is outside the folders this app may read ({', '.join(map(str, roots))}). "
                        f"Set PIRL_DATA_ROOTS to allow it.")
    if not folder.is_dir():
        raise PirlError(f"{folder} is not a folder.")
    return FolderListing(folder, roots, include_hidden)


def _walk(folder: Path, base: Path, roots: list[Path], cap: int, include_hidden: bool) -> Iterator[SourceFile]:
    """`base`'s entries and, depth first, its sub-folders', in the order of their names relative to `folder`: a
    sub-folder sorts as its name with a '/' (every name under it shares that prefix), so the whole walk comes out
    sorted without ever holding more than one folder's names."""
    rel = base.relative_to(folder).as_posix()
    try:
        with os.scandir(base) as it:
            entries = sorted(((e.name + "/" if e.is_dir() else e.name), e) for e in it)
    except OSError as exc:
        yield _refused(rel + "/", f"folder cannot be read ({exc.strerror or exc})")
        return
    prefix = "" if rel == "." else rel + "/"
    for key, entry in entries:
        name = prefix + key
        if not key.endswith("/"):
            yield _file_entry(Path(entry.path), name, roots, cap, include_hidden)
        elif (entry.name.startswith(".") or entry.name == "__MACOSX") and not include_hidden:
            yield _refused(name, "hidden folder: skipped")
        elif entry.is_symlink():
            yield _refused(name, "link to a folder: not followed (import that folder itself)")
        else:
            yield from _walk(folder, Path(entry.path), roots, cap, include_hidden)


def _file_entry(path: Path, name: str, roots: list[Path], cap: int, include_hidden: bool) -> SourceFile:
    if _hidden(PurePosixPath(name).parts) and not include_hidden:
        return _refused(name, "hidden file: skipped")
    try:
        real = path.resolve(strict=True)
        info = real.stat()
    except FileNotFoundError:
        return _refused(name, "broken link: its target does not exist")
    except (RuntimeError, OSError) as exc:
        return _refused(name, f"cannot follow ({getattr(exc, 'strerror', None) or exc})")
    if roots and not _inside(real, roots):
        return _refused(name, "links to a file outside the folders this app may read: refused")
    if not stat.S_ISREG(info.st_mode):
        return _refused(name, "not a regular file (a device, pipe or socket)")
    if info.st_size > cap:
        return _refused(name, f"{_mb(info.st_size)}, over the {_mb(cap)} cap per file (PIRL_MAX_FILE_MB)")
    return SourceFile(name, real.read_bytes)


def _hidden(parts) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in parts)


def zip_source(zip_file, max_files: int = MAX_ZIP_FILES, max_bytes: int = MAX_ZIP_BYTES
               ) -> tuple[list[SourceFile], list[dict]]:
    """Entries of a zip (path or file object) and the entries refused for their path."""
    try:
        zf = zipfile.ZipFile(zip_file)
    except zipfile.BadZipFile:
        raise PirlError("The file is not a valid zip archive.") from None
    entries = [i for i in zf.infolist() if not i.is_dir()]
    if len(entries) > max_files:
        raise PirlError(f"The zip holds {len(entries):,} files, over the limit of {max_files:,}. Split it.")
    total = sum(i.file_size for i in entries)
    if total > max_bytes:
        raise PirlError(f"The zip unpacks to {total / 1e9:.1f} GB, over the limit of {max_bytes / 1e9:.1f} GB "
                        f"(a zip bomb, or a set to ingest from a server folder instead).")
    files, refused, cap = [], [], max_file_bytes()
    for info in entries:
        path = PurePosixPath(info.filename.replace("\\", "/"))
        if not path.parts or path.name in ("", "."):
            refused.append({"name": info.filename, "reason": "no file name in the zip entry: not extracted"})
            continue
        if path.is_absolute() or ".." in path.parts or info.filename.startswith(("/", "\\")) or ":" in path.parts[0]:
            refused.append({"name": info.filename, "reason": "unsafe path in zip (absolute or '..'): not extracted"})
            continue
        if _hidden(path.parts):
            refused.append({"name": info.filename, "reason": "hidden file: skipped"})
            continue
        if info.file_size > cap:
            refused.append({"name": info.filename, "reason": f"unpacks to {_mb(info.file_size)}, over the {_mb(cap)} "
                                                             "cap per file (PIRL_MAX_FILE_MB)"})
            continue
        files.append(SourceFile(path.as_posix(), lambda info=info: _read_entry(zf, info)))
    return files, refused


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    with zf.open(info) as f:
        data = f.read(info.file_size + 1)
    if len(data) > info.file_size:
        raise BadImage("zip entry larger than its header claims")
    return data


def read_source(src: SourceFile) -> bytes:
    try:
        return src.read()
    except OSError as exc:
        raise BadImage(f"cannot read file ({exc.strerror or exc})") from None


def upload_source(files: list[tuple[str, bytes]]) -> list[SourceFile]:
    return [SourceFile(name, lambda data=data: data) for name, data in files]
