"""File helpers shared by the scripts: atomic writes (a file is either the old one or complete) and content hashes.

SIGTERM while a file is being written leaves no temporary file: the signal becomes SystemExit
(exit code 143) for the length of the write, so the cleanup runs.
"""

import hashlib
import json
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

from .cli import UserError


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)


@contextmanager
def sigterm_as_exit():
    """SIGTERM raises SystemExit inside the block (main thread, default handler only)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def check_output_file(path, flag: str = "--output_file"):
    """A one-line error for an output path that is a folder or lies under a file."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder, not a file")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{flag} {path}: {parent} is a file, not a folder")


@contextmanager
def atomic_open(path, mode: str = "w"):
    """Write to a temp file beside path, renamed onto path only if the block ends without error ("wb": binary)."""
    path = Path(path)
    check_output_file(path, "output")
    path.parent.mkdir(parents=True, exist_ok=True)
    # A plain open (not mkstemp) so the file gets the usual umask permissions, not 0600.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with sigterm_as_exit():
        try:
            with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f:
                yield f
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def write_jsonl_atomic(records, path):
    with atomic_open(path) as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def write_json_atomic(records, path):
    with atomic_open(path) as f:
        json.dump(records, f, ensure_ascii=False, indent=2)
        f.write("\n")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_jsonl_gz_atomic(records, path):
    """JSON Lines, gzip-compressed with no timestamp (the same records give the same bytes), written atomically."""
    import gzip

    with atomic_open(path, "wb") as f, gzip.GzipFile(filename="", fileobj=f, mode="wb", mtime=0) as z:
        z.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8"))
