"""The output rule, in one place: what a script may write. Every script that writes files calls
`check_outputs` before any work, and writes through alpaca_cot/io.py (`atomic_open`, `atomic_folder`).

1. An output may not be an input, contain an input, or lie inside an input folder (paths resolved, links
   followed); two outputs may not be the same path.
2. An output that exists needs --overwrite, and --overwrite replaces only what is recognisably this
   project's: a file in the format the script writes there (JSON, JSON Lines or UTF-8 text, judged from
   its first 64 KiB), or a folder that holds the script's marker file (an export's
   `.alpaca-cot-export.json`, a tiny model's `.alpaca-cot.json`, a study's config.json). An empty file or
   folder is replaced freely. A folder that a script continues rather than replaces (a study) must be
   one of its own, or empty; finetune's output folder follows its own rules (checkpoints.plan).
3. Before any work: the nearest existing folder of every output must take a probe file (created and
   removed), and each filesystem must have room for everything the script will write there (its
   estimate, plus 10% and 16 MiB). Where a size is known only later (the records formatted, the adapter
   built), `check_space` runs then, still before the first write.
4. Writes are atomic and leave nothing behind (io.py): a temporary beside the output, renamed into place;
   SIGTERM removes it, and after kill -9 the next run that checks or writes there sweeps it.
5. An OSError while writing (a full disk, a read-only or vanished folder) is one UserError naming the path.
"""

import codecs
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from alpaca_cot.cli import UserError
from alpaca_cot.io import MARKER, sweep  # noqa: F401  (MARKER: a folder's marker, written by io.atomic_folder)

SPACE_MARGIN = 1.1
SPACE_SLACK = 16 << 20
HEAD = 64 << 10


# ---- paths ----

def resolved(path) -> Path:
    """The absolute path with links followed (the part that exists), ~ expanded."""
    return Path(os.path.abspath(Path(str(path)).expanduser())).resolve()


def inside(path, folder) -> bool:
    """path is folder or below it (both resolved)."""
    path, folder = resolved(path), resolved(folder)
    return path == folder or folder in path.parents


def nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


# ---- what is ours ----

def _head_text(path: Path) -> str | None:
    """The first HEAD bytes of a file as text, or None if they are not UTF-8 text (a NUL, a bad byte)."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD)
    except OSError:
        return None
    if b"\0" in head:
        return None
    try:
        return codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
    except UnicodeDecodeError:
        return None


def is_ours(path: Path, kind: str, marker=None) -> bool:
    """Whether an existing output is something this project writes there (see the module docstring)."""
    path = Path(path)
    if kind == "folder":
        markers = (marker,) if isinstance(marker, str) else marker or ()
        return not any(path.iterdir()) or any((path / m).is_file() for m in markers)
    text = _head_text(path)
    if text is None:
        return False
    body = text.strip()
    if not body or kind == "text":
        return True
    if kind == "json":
        return body[0] in "[{"
    first, newline, _ = body.partition("\n")
    if not newline and len(text.encode("utf-8")) >= HEAD:
        return first.startswith("{")  # one line longer than what was read
    try:
        return isinstance(json.loads(first), dict)
    except ValueError:
        return False


WHAT = {"json": "a JSON file", "jsonl": "a JSON Lines file", "text": "a text file"}


# ---- the check ----

@dataclass
class Output:
    """One thing a script will write. kind: json, jsonl, text (a file) or folder; size: the bytes it will
    hold (an estimate); marker: the file inside a folder that shows it is ours; existing: what an existing one
    needs: "replace" (--overwrite, and it must be ours), "continue" (it must be ours: a study goes on in it) or
    "own" (the script's own rules decide, as finetune's checkpoints.plan does for its output folder)."""
    path: Path
    flag: str = "output"
    kind: str = "text"
    size: int = 0
    marker: str | tuple | None = None
    existing: str = "replace"

    def __post_init__(self):
        self.path = Path(str(self.path)).expanduser()


def _size(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _check_shape(o: Output, where: Path):
    folder = o.kind == "folder"
    if where.exists() and where.is_dir() != folder:
        raise UserError(f"{o.flag} {o.path} is a {'file' if folder else 'folder'}, not a {'folder' if folder else 'file'}")
    parent = nearest_existing(where.parent)
    if parent != where and not where.exists() and not parent.is_dir():
        raise UserError(f"{o.flag} {o.path}: {parent} is a file, not a folder")


def _check_inputs(o: Output, where: Path, inputs):
    for label, path in inputs:
        source = resolved(path)
        if where == source:
            raise UserError(f"{o.flag} {o.path} is the input {label} {path}; choose another "
                            f"{'folder' if o.kind == 'folder' else 'file'}")
        if where in source.parents:
            raise UserError(f"{o.flag} {o.path} contains the input {label} {path}; choose another folder")
        if source in where.parents:
            raise UserError(f"{o.flag} {o.path} lies inside the input {label} {path}; choose a path outside it")


def _check_existing(o: Output, where: Path, overwrite: bool, what: str):
    if o.existing == "own" or not where.exists() or (o.kind == "folder" and not any(where.iterdir())):
        return
    ours = is_ours(where, o.kind, o.marker)
    markers = " or ".join((o.marker,) if isinstance(o.marker, str) else o.marker or ("marker",))
    if o.existing == "continue":
        if not ours:
            raise UserError(f"{o.flag} {o.path} is not empty and is not {what} (no {markers}); choose another folder")
        return
    if not overwrite:
        raise UserError(f"{o.flag} {o.path} already exists; pass --overwrite to replace it")
    if not ours:
        if o.kind == "folder":
            raise UserError(f"{o.flag} {o.path} is not {what} (no {markers}); --overwrite replaces only that: "
                            "choose another folder")
        raise UserError(f"{o.flag} {o.path} is not {WHAT[o.kind]} as this script writes; --overwrite replaces only "
                        "that: choose another file")


def check_writable(path, flag: str = "output"):
    """A one-line error unless a file can be created in path's nearest existing folder (a probe, removed)."""
    path = Path(str(path)).expanduser()
    probe_dir = nearest_existing(path if path.is_dir() else path.parent)
    if not probe_dir.is_dir():
        raise UserError(f"{flag} {path}: {probe_dir} is a file, not a folder")
    try:
        handle, probe = tempfile.mkstemp(prefix=".probe-", dir=probe_dir)
        os.close(handle)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot write in {probe_dir} ({e.strerror})") from None
    return probe_dir


def check_space(outputs):
    """Refuse when a filesystem cannot hold what the outputs on it will take (their sizes summed, with a margin)."""
    by_device = {}
    for o in (o for o in outputs if o is not None):
        probe_dir = nearest_existing(resolved(o.path))
        probe_dir = probe_dir if probe_dir.is_dir() else probe_dir.parent
        device = os.stat(probe_dir).st_dev
        first, total = by_device.get(device, ((o, probe_dir), 0))
        by_device[device] = (first, total + max(0, int(o.size)))
    for (o, probe_dir), total in by_device.values():
        if not total:
            continue
        need = total * SPACE_MARGIN + SPACE_SLACK
        free = shutil.disk_usage(probe_dir).free
        if need > free:
            raise UserError(f"{o.flag} {o.path}: the output needs about {_size(need)} (an estimate, with a margin), "
                            f"{probe_dir} has {_size(free)} free")


def check_outputs(outputs, inputs=(), overwrite: bool = False, what: str = "a folder this script wrote"):
    """The output rule (module docstring, points 1-3) for every output a script will write, before any work.

    outputs: Output objects (None entries are skipped); inputs: (label, path) pairs of the local files and folders
    the script reads (None is skipped: an unset flag; a path that does not exist yet, such as a download's
    target, still counts). Nothing is written here but a probe file; dead temporaries beside the outputs are
    swept. Returns the outputs.
    """
    outputs = [o for o in outputs if o is not None]
    inputs = [(label, path) for label, path in inputs if path is not None and str(path) != ""]
    seen = {}
    for o in outputs:
        where = resolved(o.path)
        if where in seen:
            raise UserError(f"{o.flag} {o.path} is also {seen[where].flag}; each output needs its own path")
        seen[where] = o
        _check_shape(o, where)
        _check_inputs(o, where, inputs)
        sweep(where.parent)
        _check_existing(o, where, overwrite, what)
    for o in outputs:
        check_writable(o.path, o.flag)
    check_space(outputs)
    return outputs


def files_in(folder, flag: str, kinds: dict[str, str], size: int = 0) -> list[Output]:
    """The Outputs of named files a script writes into folder ({name: kind}); size (all of them) goes to the first."""
    return [Output(Path(str(folder)).expanduser() / name, f"{flag} {folder}:", kind, size if i == 0 else 0)
            for i, (name, kind) in enumerate(kinds.items())]


# A token decodes to at most this many bytes of text, in practice (a long piece of repeated punctuation or CJK).
BYTES_PER_TOKEN = 16


def answers_bytes(records, max_new_tokens: int, copies: int = 1) -> int:
    """The bytes of answered records written as JSON Lines, at most: each record's own text twice (the record and
    the prompt or reference) and an answer of max_new_tokens tokens, copies times (e.g. with and without a trigger)."""
    own = sum(len(json.dumps(r, ensure_ascii=False).encode("utf-8")) for r in records)
    return copies * (2 * own + len(records) * (max_new_tokens * BYTES_PER_TOKEN + 1024))


RECORD_BYTES = 4 << 10


def estimate_bytes(records: int = 0, answers: int = 0, max_new_tokens: int = 0) -> int:
    """The bytes of records written as JSON (RECORD_BYTES each, a generous mean for instruction data) and of
    answered records (with an answer of max_new_tokens tokens each)."""
    return records * RECORD_BYTES + answers * (2 * RECORD_BYTES + max_new_tokens * BYTES_PER_TOKEN)


