"""Runs a function as a `fire` command line and turns user errors into one clean line.

Every script calls `run(fn)`: a `UserError` raised anywhere below becomes
`error: <message>` on stderr and exit code 2, never a traceback.
"""

import functools
import logging
import sys
import warnings

import fire

# Noise from the stack on every run: peft calls a renamed transformers method, and bitsandbytes
# on a CPU machine asks for an optional kernels package when peft imports it.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(lambda r: "kernels-community" not in r.getMessage())


class UserError(Exception):
    """Bad input from the user (file, record, field, flag): reported in one line."""


def fail(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def run(fn):
    @functools.wraps(fn)
    def command(*args, **kwargs):
        fn(*args, **kwargs)  # whatever fn returns is for Python callers, not for fire to print

    try:
        fire.Fire(command)
    except UserError as e:
        fail(str(e))
