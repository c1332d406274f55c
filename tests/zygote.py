"""A process that has imported the heavy libraries once and forks a fresh child for every script a test runs.

conftest.run_python runs `python script args` as a child of this process instead of a new interpreter: the
child is a new process (its own pid, cwd, environment, stdin, stdout, stderr and exit code) that runs the
script as __main__, but starts with torch, transformers, peft and datasets already imported, which is most of
a script's start-up. Nothing of the project is imported here, so every child imports alpaca_cot from disk.
Runs that need a clean interpreter (another PYTHONPATH, other HF_* or OMP settings than this process was
started with, `python -c`) go through a real subprocess instead (conftest.run_python decides).

Protocol: one JSON request per line on stdin ({args, cwd, env, stdin, stdout, stderr}: file paths); the reply,
one JSON line on stdout, is {"pid"} once the child runs, then {"returncode"} when it ends.
"""

import json
import os
import sys

# Imported once, here, before any thread exists: every child inherits them.
import datasets  # noqa: F401
import peft  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401


def child(request: dict):
    """In the forked child: become the script's process, run it as __main__, exit with its code."""
    import atexit
    import runpy

    os.setpgid(0, 0)  # its own process group, so that a timeout kills it and whatever it started
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path, mode in ((0, request["stdin"], os.O_RDONLY), (1, request["stdout"], os.O_WRONLY),
                           (2, request["stderr"], os.O_WRONLY)):
        os.dup2(os.open(path, mode), fd)
    sys.stdin = open(0, encoding="utf-8", closefd=False)
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False, buffering=1)
    sys.stderr = open(2, "w", encoding="utf-8", closefd=False, buffering=1)
    if "OMP_NUM_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    code = 0
    try:
        args = request["args"]
        if args[0] == "-m":
            sys.path.insert(0, os.getcwd())  # as `python -m` puts the working folder first
            sys.argv = [args[1], *args[2:]]
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(args)
            sys.path.insert(0, os.path.dirname(os.path.abspath(args[0])))  # as `python script` puts it first
            runpy.run_path(args[0], run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int) and e.code is not None:
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def main():
    sys.path.pop(0)  # this file's folder: the children's scripts put their own there
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            child(request)
        replies.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")


if __name__ == "__main__":
    main()
