"""The test harness's zygote (tests/zygote.py, conftest.run_python): a forked child behaves as a new interpreter
would for what the tests look at: arguments, cwd, environment, stdin, stdout, stderr, exit code, timeout."""

import os
import subprocess
import sys

import pytest

from conftest import Zygote, run_python

SCRIPT = """import os, sys
print("argv", sys.argv[1:], "cwd", os.getcwd(), "flag", os.environ.get("PAGER"), "path0", sys.path[0])
print("read", sys.stdin.read().strip(), file=sys.stderr)
if sys.argv[1:] == ["sleep"]:
    import time; time.sleep(30)
sys.exit(int(sys.argv[1]) if sys.argv[1:] and sys.argv[1].isdigit() else 0)
"""


def test_a_child_is_what_a_new_interpreter_would_be(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PAGER="on")  # a variable the zygote lets a child set (Zygote.FREE)
    assert Zygote.serving([str(script)], env) is not None
    forked = run_python(script, "3", cwd=tmp_path, env=env, stdin="hello")
    fresh = subprocess.run([sys.executable, str(script), "3"], cwd=tmp_path, env=env, input="hello",
                           capture_output=True, text=True)
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert forked.returncode == 3 and "flag on" in forked.stdout and "read hello" in forked.stderr
    with pytest.raises(subprocess.TimeoutExpired):
        run_python(script, "sleep", cwd=tmp_path, timeout=2)
    assert run_python(script, "0", cwd=tmp_path).returncode == 0  # the zygote serves on after a timeout
    assert Zygote.serving([str(script)], dict(os.environ, PYTHONPATH="/elsewhere")) is None
