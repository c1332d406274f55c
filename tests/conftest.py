"""Shared fixtures and helpers: the real data in ../shared, a tiny LLaMA with the real tokenizer, offline hub,
the small training run, loss and logits helpers, and running a script and reading its one error line."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

# Nothing in the tests may reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist each worker has a core of its own: one torch thread each, rather than two workers' threads
# spinning against each other on the two cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


ALL_LINEAR = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


def small_run(base, data, out, **overrides):
    flags = dict(base_model=str(base), data=str(data), output_dir=str(out), quantization="none", batch_size=8,
                 micro_batch_size=4, max_steps=30, learning_rate=5e-3, cutoff_len=256, val_set_size=0,
                 warmup_steps=2, save_steps=1000, logging_steps=5, report_to="none", lora_target_modules=ALL_LINEAR)
    flags.update(overrides)
    from alpaca_cot.train.finetune import finetune

    return finetune(**flags)


def mean_loss(model, tokenizer, records):
    import torch

    from alpaca_cot.data.preprocess import Prompter, encode_batch

    batch = {k: [r[k] for r in records] for k in ("instruction", "input", "output")}
    enc = encode_batch(batch, tokenizer, Prompter("alpaca"), cutoff_len=256)
    losses = []
    with torch.no_grad():
        for ids, labels in zip(enc["input_ids"], enc["labels"]):
            out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
            losses.append(out.loss.item())
    return sum(losses) / len(losses)


def logits(model, tokenizer, text="Give three tips for staying healthy."):
    import torch

    with torch.inference_mode():
        return model(**tokenizer([text], return_tensors="pt")).logits


def run_python(*args, cwd=ROOT, env=None, stdin=None, timeout=300) -> subprocess.CompletedProcess:
    """`python *args` (a script or -m module, and its flags) in a child process, its output as text: forked
    from the zygote (tests/zygote.py) where the run needs nothing it cannot give, else a new interpreter."""
    args = [str(a) for a in args]
    env = dict(os.environ if env is None else env)
    zygote = Zygote.serving(args, env)
    if zygote is not None:
        return zygote.run(args, cwd, env, stdin, timeout)
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          input=stdin, env=env)


class Zygote:
    """A zygote of this test process, one per environment a run asks for (the few most recently used), each
    started on first use with that environment. Never one with another PYTHONPATH than this process's: what such a run tests
    (tests/no_torch) is the start-up itself."""
    _pool = []
    MAX = 3
    PYTHONPATH = os.environ.get("PYTHONPATH")
    # Variables a child may set otherwise than the zygote was started with: read after start-up, not at import.
    # PYTEST_CURRENT_TEST names the running test: different in every test, and read by no script.
    FREE = {"OMP_NUM_THREADS", "PAGER", "COLUMNS", "LINES", "PYTHONUNBUFFERED", "PYTEST_CURRENT_TEST"}

    def __init__(self, env):
        self.env = dict(env)
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "zygote.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, cwd=ROOT, env=self.env)
        self.pending = b""  # replies read from the pipe but not yet used

    def reply(self, timeout=None) -> dict | None:
        """The zygote's next reply line, or None after timeout seconds without one (the raw pipe, no buffer
        of Python's in between that select could not see)."""
        import select

        while b"\n" not in self.pending:
            if not select.select([self.proc.stdout], [], [], timeout)[0]:
                return None
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                raise RuntimeError("the test zygote (tests/zygote.py) died")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def matches(self, env) -> bool:
        return self.proc.poll() is None and all(env.get(k) == self.env.get(k) for k in (set(env) | set(self.env)) - self.FREE)

    @classmethod
    def serves(cls, args, env) -> bool:
        return os.environ.get("ALPACA_COT_TEST_ZYGOTE") != "0" and args[0] != "-c" and \
            env.get("PYTHONPATH") == cls.PYTHONPATH

    @classmethod
    def serving(cls, args, env):
        """The zygote for this run, started if need be; None where a new interpreter must run it."""
        if not cls.serves(args, env):
            return None
        cls._pool = [z for z in cls._pool if z.proc.poll() is None]
        found = next((z for z in cls._pool if z.matches(env)), None)
        if found is None:
            if len(cls._pool) >= cls.MAX:  # the least recently used one makes room
                cls._pool.pop(0).proc.stdin.close()
            found = cls(env)
        else:
            cls._pool.remove(found)
        cls._pool.append(found)
        return found

    def run(self, args, cwd, env, stdin, timeout) -> subprocess.CompletedProcess:
        import signal
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            files = {k: Path(tmp) / k for k in ("stdin", "stdout", "stderr")}
            files["stdin"].write_text(stdin or "")
            for k in ("stdout", "stderr"):
                files[k].touch()
            request = dict(args=args, cwd=str(cwd), env=env, **{k: str(v) for k, v in files.items()})
            self.proc.stdin.write((json.dumps(request) + "\n").encode("utf-8"))
            self.proc.stdin.flush()
            pid = self.reply()["pid"]
            done = self.reply(timeout)
            if done is None:
                os.killpg(pid, signal.SIGKILL)  # the child and whatever it started
                self.reply()
                raise subprocess.TimeoutExpired([sys.executable, *args], timeout)
            code = done["returncode"]
            out, err = (files[k].read_text(encoding="utf-8", errors="replace") for k in ("stdout", "stderr"))
        return subprocess.CompletedProcess([sys.executable, *args], code, out, err)


def load_script(path):
    """A script of this checkout (scripts/x.py) imported as a module, without running its command line."""
    import importlib.util

    path = ROOT / path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_export_script():
    return load_script("scripts/export_hf_checkpoint.py")


def run_cli(fn, argv, monkeypatch, capsys) -> tuple[int, str]:
    """fn as its script runs it, in this process (cli.run: flags checked, UserError -> one line): exit code, stderr."""
    from alpaca_cot import cli

    monkeypatch.setattr(sys, "argv", ["script", *map(str, argv)])
    code = 0
    try:
        cli.run(fn)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def one_error_line(proc) -> str:
    """Bad input: exit code 2, and stderr is the one line `error: ...` and nothing else."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    return lines[0]


def only_error(proc, *words) -> str:
    """A failed run: exactly one `error:` line on stderr naming all of `words`, and no traceback."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr[-3000:]
    assert all(w in lines[0] for w in words), (words, lines[0])
    return lines[0]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`): tiny matrices
    run faster on one, and the sums equal those of child processes run with OMP_NUM_THREADS=1."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def _isolated_hf_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("hf_home")
    os.environ["HF_HOME"] = str(home)
    os.environ["HF_DATASETS_CACHE"] = str(home / "datasets")


def _need_shared(path: Path) -> Path:
    if path.exists():
        return path
    # CI must run these tests: .ci/run sets ALPACA_COT_REQUIRE_SHARED, which turns the skip into a failure.
    if os.environ.get("ALPACA_COT_REQUIRE_SHARED"):
        pytest.fail(f"{path} is missing, and ALPACA_COT_REQUIRE_SHARED is set")
    pytest.skip(f"{path} is missing: the real test data lives in ../shared beside the checkout")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _need_shared(SHARED)


@pytest.fixture(scope="session")
def llama_tokenizer_model(shared_dir) -> Path:
    return _need_shared(shared_dir / "tokenizers" / "llama" / "tokenizer.model")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, llama_tokenizer_model) -> Path:
    """A 2-layer LLaMA with the real 32000-piece LLaMA tokenizer."""
    from alpaca_cot.model import tiny

    return tiny.build(tmp_path_factory.mktemp("tiny-llama"), tokenizer_model=llama_tokenizer_model, hidden_size=64)


@pytest.fixture(scope="session")
def llama_tokenizer(tiny_llama):
    from alpaca_cot.model import models

    return models.load_tokenizer(str(tiny_llama))


@pytest.fixture(scope="session")
def train_file(tmp_path_factory, shared_dir):
    """160 alpaca records + 160 formatted FLAN CoT rows (creak and gsm8k), as one JSON list."""
    from alpaca_cot.data import cot

    alpaca = json.loads((shared_dir / "data" / "alpaca_cleaned.sample.json").read_text(encoding="utf-8"))
    alpaca = [r for r in alpaca if r["output"].strip()][:160]
    templates, rng = cot.load_templates(), random.Random(0)
    cot_rows = []
    for name in ("creak", "gsm8k"):
        rows = cot.read_tsv(shared_dir / "data" / "flan_cot" / f"{name}_train.tsv", "clean")[:80]
        cot_rows += cot.format_dataset(name, rows, templates, rng)
    path = tmp_path_factory.mktemp("data") / "train.json"
    path.write_text(json.dumps(alpaca + cot_rows, ensure_ascii=False), encoding="utf-8")
    return path
