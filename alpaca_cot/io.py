"""Atomic file writing shared by the scripts: a file is either the old one or complete."""

import json
import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_open(path):
    """Write to a temp file beside path, renamed onto path only if the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A plain open (not mkstemp) so the file gets the usual umask permissions, not 0600.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(records, path):
    with atomic_open(path) as f:
        json.dump(records, f, ensure_ascii=False, indent=2)
        f.write("\n")
