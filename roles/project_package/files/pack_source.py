"""Pack the parts of a source tree that make the Python distribution into a tarball.

Run on the Ansible controller. The archive is reproducible: members are sorted, and
their times, owners and modes are normalised, so the same files give the same bytes
and the same SHA-256. The role installs the tree again only when that digest differs
from the one recorded in the virtualenv, and `copy` transfers the archive only when
its content changed.

Usage: pack_source.py SOURCE_DIR ARCHIVE ENTRY [ENTRY ...]

ENTRY is a file or directory relative to SOURCE_DIR (pyproject.toml, a package
directory, ...); missing entries are skipped. Inside a Git work tree only files Git
tracks or would track (``git ls-files -co --exclude-standard``) are packed, so
virtualenvs, caches and anything in .gitignore stay out; elsewhere caches are left out
by name. Prints one JSON object: {"archive", "sha256", "files"}.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

#: Directory names never packed, whatever the tree.
SKIP_DIRS = frozenset({".git", ".venv", "venv", "__pycache__", ".pytest_cache",
                       ".ruff_cache", ".mypy_cache", ".portal", "node_modules", "build",
                       "dist"})
#: File suffixes never packed.
SKIP_SUFFIXES = (".pyc", ".pyo")


def git_files(root: Path) -> set[str] | None:
    """Files Git tracks or would track under root, or None outside a work tree."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "-co", "--exclude-standard"],
            capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {name for name in out.decode().split("\0") if name}


def walk(root: Path, entry: str) -> list[str]:
    path = root / entry
    if path.is_file():
        return [entry]
    found = []
    for directory, subdirs, files in os.walk(path):
        subdirs[:] = sorted(d for d in subdirs if d not in SKIP_DIRS)
        for name in files:
            found.append(str(Path(directory, name).relative_to(root)))
    return found


def select(root: Path, entries: list[str]) -> list[str]:
    tracked = git_files(root)
    chosen = set()
    for entry in entries:
        for name in walk(root, entry):
            parts = Path(name).parts
            if any(part in SKIP_DIRS for part in parts) or name.endswith(SKIP_SUFFIXES):
                continue
            if tracked is not None and name not in tracked:
                continue
            if (root / name).is_file():
                chosen.add(name)
    return sorted(chosen)


def pack(root: Path, names: list[str]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            path = root / name
            info = tarfile.TarInfo(name)
            info.size = path.stat().st_size
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=0) as gz:
        gz.write(raw.getvalue())
    return packed.getvalue()


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    root, archive, entries = Path(argv[0]).resolve(), Path(argv[1]), argv[2:]
    if not (root / "pyproject.toml").is_file():
        print(f"pack_source: {root} has no pyproject.toml", file=sys.stderr)
        return 1
    names = select(root, entries)
    data = pack(root, names)
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(f".{archive.name}.{os.getpid()}")
    partial.write_bytes(data)
    partial.replace(archive)
    print(json.dumps({"archive": str(archive), "sha256": hashlib.sha256(data).hexdigest(),
                      "files": len(names)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
