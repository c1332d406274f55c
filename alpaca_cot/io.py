"""File writing shared by the scripts: a JSON list written atomically."""

import json
import os
from pathlib import Path


def write_json_atomic(records, path):
    """Writes to a temp file beside path, then renames: path is either old or complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A plain open (not mkstemp) so the file gets the usual umask permissions, not 0600.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(records, f, ensure_ascii=False, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
