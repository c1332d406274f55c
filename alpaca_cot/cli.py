"""Runs a function as a `fire` command line and turns user errors into one clean line.

Every script calls `run(fn)`: a `UserError` raised anywhere below becomes
`error: <message>` on stderr and exit code 2, never a traceback.
"""

import sys

import fire


class UserError(Exception):
    """Bad input from the user (file, record, field, flag): reported in one line."""


def fail(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def run(fn):
    try:
        fire.Fire(fn)
    except UserError as e:
        fail(str(e))
