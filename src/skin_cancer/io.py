"""Atomic file outputs: a failed, interrupted or killed stage leaves the old output or the new one,
never a mix, and its temporary files are removed by the next writer of the same output."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Temporary siblings are named .<output>.<TMP_MARK>.<pid>.<random>: the pid tells the next writer
# whether the process that made one is gone, so that its leftovers can be removed safely.
TMP_MARK = "partial"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_leftovers(path: Path) -> list[Path]:
    """Remove temporary siblings of `path` left by writers that no longer run (killed stages)."""
    removed = []
    for candidate in path.parent.glob(f".{path.name}.{TMP_MARK}.*"):
        pid = candidate.name[len(f".{path.name}.{TMP_MARK}.") :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            _remove(candidate)
            removed.append(candidate)
    return removed


def _temporary_sibling(path: Path, suffix: str = "") -> Path:
    return path.parent / f".{path.name}.{TMP_MARK}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}"


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where not supported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _replace(new: Path, path: Path) -> None:
    """Put `new` at `path`; an existing `path` is swapped out whole, then deleted."""
    if not path.exists() or not path.is_dir():
        os.replace(new, path)  # atomic for files, and for a folder onto nothing
        return
    if not _exchange(new, path):
        # Move aside, rename in: between the two renames the old output is whole under another name.
        aside = _temporary_sibling(path)
        os.replace(path, aside)
        os.replace(new, path)
        new = aside
    _remove(new)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    tmp = _temporary_sibling(path, path.suffix)  # writers such as Keras' save() go by the suffix
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_umask())  # as a plain open() would have created it
        os.replace(tmp, path)
    finally:
        _remove(tmp)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    tmp = _temporary_sibling(path)
    tmp.mkdir()  # mode from the umask, like any folder the stage would make
    try:
        yield tmp
        _replace(tmp, path)
    finally:
        _remove(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path):
    with open(path) as handle:
        return json.load(handle)


def folder_fingerprint(root: str | Path) -> dict:
    """Content fingerprint of every file below `root` (names and bytes; hidden files left out):
    equal for equal content wherever the folder lies. FileNotFoundError if `root` is no folder."""
    import hashlib

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data folder not found")
    digest, files, size = hashlib.sha256(), 0, 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        content = path.read_bytes()
        digest.update(f"{relative.as_posix()}\0{hashlib.md5(content).hexdigest()}\n".encode())
        files, size = files + 1, size + len(content)
    return {"files": files, "bytes": size, "sha256": digest.hexdigest()}
