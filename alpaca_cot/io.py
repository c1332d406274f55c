"""Writing files: atomically (a file is either the old one or complete), leaving nothing behind, and one line
for a failed write; content hashes. What a script may write at all is alpaca_cot/outputs.py's rule.

A file is written to `.<name>.<pid>.tmp` beside it and renamed over it; a folder is built as
`.<name>.saving-<pid>` beside it and swapped in, the previous one parked as `.<name>.old-<pid>` until the
swap is done (a cache's folder is moved in unless another process made it first). These two writers are the
project's only ones; a save with its own commit protocol (the adapter's) stages in `.saving-<pid>-*`
(`staging_folder`), which sweep knows too. SIGTERM while a file is being written leaves no temporary file: the signal becomes
SystemExit (exit code 143) for the length of the write, so the cleanup runs. After kill -9, `sweep`
(run by the next write there, by outputs.check_outputs and by finetune, generate.py and the export on
an adapter folder) removes the temporaries whose process is dead and puts back a parked folder whose swap
did not finish. An OSError while writing (a full disk, a read-only or vanished folder) becomes one
UserError naming the path (`write_errors`); what was there before is left as it was.
"""

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from alpaca_cot.cli import UserError

# Temporaries of the atomic writes, by what they are: a file's, a folder's, a replaced folder's, an adapter's staging.
TEMP_FILE = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.tmp")
TEMP_FOLDER = re.compile(r"\.(?P<name>.+)\.saving-(?P<pid>\d+)")
PARKED_FOLDER = re.compile(r"\.(?P<name>.+)\.old-(?P<pid>\d+)")
STAGING_PREFIX = ".saving-"
STAGING = re.compile(re.escape(STAGING_PREFIX) + r"(?P<pid>\d+)-\w+")
MARKER = ".alpaca-cot.json"  # what atomic_folder writes into a folder it built (outputs.MARKER)


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


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OverflowError, ValueError, OSError):
        return False
    return True


def _dead(match) -> bool:
    return match is not None and not pid_alive(int(match["pid"]))


def sweep(folder) -> list[Path]:
    """Remove the temporaries of this module's atomic writes whose process is dead, in folder; a parked
    folder (`.<name>.old-<pid>`) goes back to its name if nothing took its place. Returns what it removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    for entry in entries:
        name = entry.name
        if not name.startswith("."):
            continue
        try:
            if _dead(TEMP_FILE.fullmatch(name)) and entry.is_file():
                entry.unlink()
            elif (_dead(TEMP_FOLDER.fullmatch(name)) or _dead(STAGING.fullmatch(name))) and entry.is_dir():
                shutil.rmtree(entry)
            elif _dead(parked := PARKED_FOLDER.fullmatch(name)) and entry.is_dir():
                target = folder / parked["name"]
                if target.exists():
                    shutil.rmtree(entry)
                else:
                    os.replace(entry, target)
                    continue
            else:
                continue
        except OSError:
            continue  # a read-only folder: the check of the outputs says so
        removed.append(entry)
    return removed


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


# What a failed write looks like when torch or safetensors report it (they raise RuntimeError and their own types).
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
WRITE_FAILURES = ("No space left on device", "Disk quota exceeded", "Read-only file system", "file write failed",
                  "StorageFull", "Permission denied")


def is_write_failure(e: BaseException, any_oserror: bool = True) -> bool:
    if isinstance(e, OSError) and (any_oserror or e.errno in WRITE_ERRNOS):
        return True
    return isinstance(e, Exception) and any(w in str(e) for w in WRITE_FAILURES)


@contextmanager
def write_errors(path, any_oserror: bool = True, note: str = "what was there is left as it was"):
    """A failed write in the block (a full disk, a read-only or vanished folder) becomes one UserError naming
    path. any_oserror=False: only OSErrors of a write (WRITE_ERRNOS), for blocks that do more than write."""
    try:
        yield
    except UserError:
        raise
    except Exception as e:
        if not is_write_failure(e, any_oserror):
            raise
        if isinstance(e, OSError):
            other = f" at {e.filename}" if getattr(e, "filename", None) and str(e.filename) != str(path) else ""
            why = f"{e.strerror or str(e) or type(e).__name__}{other}"
        else:
            why = next(w for w in WRITE_FAILURES if w in str(e))
        raise UserError(f"{path}: could not write it ({why}); {note}") from None


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def atomic_open(path, mode: str = "w"):
    """Write to a temp file beside path, renamed onto path only if the block ends without error."""
    path = Path(path)
    check_output_file(path, "output")
    # A plain open (not mkstemp) so the file gets the usual umask permissions, not 0600.
    tmp = temp_path(path)
    with sigterm_as_exit(), write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep(path.parent)
        try:
            with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
                yield f
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def json_text(records, lines: bool = False) -> str:
    """What write_json_atomic (indented, a final newline) or write_jsonl_atomic (lines=True) writes."""
    if lines:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return json.dumps(records, ensure_ascii=False, indent=2) + "\n"


def json_size(records, lines: bool = False) -> int:
    """The bytes of json_text, without holding it twice in memory for long lists."""
    if lines or not isinstance(records, list) or not records:
        return len(json_text(records, lines).encode("utf-8"))
    # Each element indented by one more level inside the list: its dump, +2 spaces on every line, plus ",\n".
    size = 4  # "[\n" ... "]\n"
    for r in records:
        text = json.dumps(r, ensure_ascii=False, indent=2)
        size += len(text.encode("utf-8")) + 2 * (text.count("\n") + 1) + 2
    return size - 1


def write_jsonl_atomic(records, path):
    with atomic_open(path) as f:
        f.write(json_text(records, lines=True))


def write_json_atomic(records, path):
    with atomic_open(path) as f:
        f.write(json_text(records))


def temp_folder(out: Path) -> Path:
    return out.with_name(f".{out.name}.saving-{os.getpid()}")


def staging_folder(folder: Path) -> Path:
    """A new `.saving-<pid>-<random>` folder inside folder, for a save that is committed by its own protocol
    (model/adapters.py); sweep removes it once its process is dead."""
    return Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=folder))


@contextmanager
def atomic_folder(out, marker: str = MARKER, provenance: dict | None = None, replace: bool = True):
    """Yields a temporary folder beside out to fill; when the block ends without error the marker (provenance as
    JSON) is written into it and it is swapped in for out, which is complete or untouched, never half-written.
    On an error the temporary is removed. replace=False: an out that exists by then (another process made the
    same folder first, as with a cache) is kept and the temporary dropped."""
    out = Path(os.path.abspath(Path(out).expanduser()))
    # A plain mkdir (not mkdtemp, which makes it 0700) so the folder gets the usual umask permissions.
    tmp = temp_folder(out)
    with sigterm_as_exit(), write_errors(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        sweep(out.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            yield tmp
            (tmp / marker).write_text(json.dumps(provenance or {}, indent=2) + "\n")
            _swap_in(tmp, out) if replace else _move_in_unless_there(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(tmp: Path, out: Path):
    """tmp renamed to out; a previous out parked as `.<name>.old-<pid>` until then (sweep puts it back after a kill)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None and not out.exists():
            os.replace(old, out)  # put the previous one back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _move_in_unless_there(tmp: Path, out: Path):
    try:
        os.rename(tmp, out)  # fails on a folder out that holds anything
    except OSError:
        if not out.is_dir():
            raise


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
        z.write(json_text(records, lines=True).encode("utf-8"))
