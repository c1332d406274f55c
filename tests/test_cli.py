"""The strict command line of every script (alpaca_cot/cli.py): a misspelled flag, a stray argument, a
value of the wrong type or out of range stops in one line before any work, and --help lists every flag.

Entry points are found by scanning finetune.py, generate.py and scripts/*.py for `run(<name>)` and
`run("<module>:<name>")`, so a new script is covered without being listed here.
"""

import functools
from dataclasses import fields
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from alpaca_cot.train.finetune import check_finetune_flags
from alpaca_cot.cli import UserError, _shape as cli_shape, arg_descriptions, parse_argv, signature_only
from conftest import ROOT, one_error_line, run_python

SCRIPTS = [ROOT / "finetune.py", ROOT / "generate.py", *sorted((ROOT / "scripts").glob("*.py"))]
# (script, "name") for run(name); (script, "module:name") for run("module:name")
CALLS = [(script, name, flags) for script in SCRIPTS for name, flags in
         re.findall(r"""\brun\(["']?([\w.]+:\w+|\w+)["']?(?:, flags=["']([\w.]+:\w+)["'])?\)""", script.read_text())]
ENTRIES = [(script, name) for script, name, _ in CALLS]
# entry -> the config dataclass ("module:Class") whose fields are its flags (alpaca_cot/config.py), if any
CONFIGS = {(script, name): flags for script, name, flags in CALLS if flags}
# Flags that name something to write: pointed into the test's empty folder, which must stay empty.
OUTPUT_FLAGS = ("out", "output_dir", "output_file", "json", "work_dir", "per_dataset_dir")


def entry_id(entry) -> str:
    return f"{entry[0].relative_to(ROOT)}:{entry[1]}"


@functools.cache
def entry_function(script: Path, name: str):
    """What the command line of the entry is checked against: its function, or its config's fields."""
    if (script, name) in CONFIGS:
        return cli_shape(name, CONFIGS[script, name])
    if ":" in name:
        module, name = name.split(":")
        return getattr(importlib.import_module(module), name)
    spec = importlib.util.spec_from_file_location(f"cli_entry_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def config_class(entry):
    module, name = CONFIGS[entry].split(":")
    return getattr(importlib.import_module(module), name)


def parameters(entry) -> list[str]:
    return list(inspect.signature(entry_function(*entry)).parameters)


# A sitecustomize that makes `import torch` fail (tests/no_torch): a script that checks its flags first still
# prints its one-line flag error under it. How long that takes is measured by scripts/benchmark_cli.py, not here.
NO_TORCH = ROOT / "tests" / "no_torch"


def cli(script, *args, cwd=ROOT, no_torch=False):
    """Run a script; returns the finished process (no_torch: with `import torch` made to fail)."""
    env = dict(os.environ, PAGER="false")
    if no_torch:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(NO_TORCH), env.get("PYTHONPATH")]))
    return run_python(ROOT / script, *args, cwd=cwd, timeout=120, env=env), None


def entry_of(script: str):
    return next(entry for entry in ENTRIES if entry[0] == ROOT / script)


def outputs_into(folder: Path, entry) -> list[str]:
    return [x for p in parameters(entry) if p in OUTPUT_FLAGS for x in (f"--{p}", str(folder / p))]


def test_every_script_is_found():
    found = {script.name for script, _ in ENTRIES}
    assert found >= {"finetune.py", "generate.py", "format_cot.py", "data_stats.py", "download_data.py",
                     "export_hf_checkpoint.py", "make_tiny_model.py", "benchmark.py", "check_fused_kernels.py"}


# format_cot.py's Args section is being written on another branch.
@pytest.mark.parametrize("entry", [pytest.param(e, id=entry_id(e)) for e in ENTRIES])
def test_every_parameter_is_described(entry):
    described = arg_descriptions(entry_function(*entry))
    assert [p for p in parameters(entry) if not described.get(p)] == []
    assert set(described) <= set(parameters(entry))  # no description of a parameter that is gone


@pytest.mark.parametrize("entry", [e for e in ENTRIES if ":" in e[1]], ids=entry_id)
def test_signature_read_from_the_source_is_the_real_one(entry):
    module, name = entry[1].split(":")
    fn = getattr(importlib.import_module(module), name)
    if entry in CONFIGS:  # the function's signature is its config's fields, as the command line is checked
        assert inspect.signature(fn) == inspect.signature(entry_function(*entry))
        assert list(inspect.signature(fn).parameters) == [f.name for f in fields(config_class(entry))]
        return
    read = signature_only(module, name)
    assert inspect.signature(read) == inspect.signature(fn) and read.__doc__ == fn.__doc__


def test_args_section_convention():
    def f(alpha, beta=1):
        """Summary.

        Args:
            alpha: the first,
                continued deeper.
            beta: the second.

        Returns:
            nothing: not an argument.
        """

    assert arg_descriptions(f) == {"alpha": "the first, continued deeper.", "beta": "the second."}


# ---- every script: a typo fails fast, with a suggestion, before anything is written ----

@pytest.mark.parametrize("entry", ENTRIES, ids=entry_id)
def test_typo_fails_before_torch_is_imported_and_writes_nothing(entry, tmp_path):
    """With `import torch` made to fail, a misspelled flag still gets its one line: the flags are checked
    before torch (seconds of importing) is imported, in every script."""
    flag = max(parameters(entry), key=len)
    typo = flag[:-2] + flag[-1]  # drop the second-last letter
    proc, _ = cli(entry[0], *outputs_into(tmp_path, entry), f"--{typo}", "1", cwd=tmp_path, no_torch=True)
    assert one_error_line(proc) == f"error: unknown flag --{typo}; did you mean --{flag}?"
    assert list(tmp_path.iterdir()) == []


def test_the_torch_blocker_blocks(tmp_path):
    proc = run_python("-c", "import torch", env=dict(os.environ, PYTHONPATH=str(NO_TORCH)))
    assert proc.returncode == 1 and "torch was imported before the flags were checked" in proc.stderr


@pytest.mark.parametrize("script, args, message", [
    ("finetune.py", ["--micro_batchsize", "4"], "unknown flag --micro_batchsize; did you mean --micro_batch_size?"),
    ("finetune.py", ["--epochs", "1"], "unknown flag --epochs; did you mean --num_epochs?"),
    ("finetune.py", ["cot"], "unexpected argument 'cot'"),
    ("generate.py", ["--instrution", "hi"], "unknown flag --instrution; did you mean --instruction?"),
    ("scripts/download_data.py", ["alpaca", "belle"], "unexpected argument 'belle'"),
    ("scripts/download_data.py", [], "missing argument name"),
])
def test_unknown_flags_and_stray_arguments(script, args, message, tmp_path):
    proc, _ = cli(script, *args, *outputs_into(tmp_path, entry_of(script)), cwd=tmp_path)
    assert message in one_error_line(proc)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("script, args, message", [
    ("finetune.py", ["--batch_size", "True"], "--batch_size takes an integer, got 'True'"),
    ("finetune.py", ["--batch_size", "1.5"], "--batch_size takes an integer, got '1.5'"),
    ("finetune.py", ["--packing", "maybe"], "--packing takes True or False, got 'maybe'"),
    ("finetune.py", ["--learning_rate", "fast"], "--learning_rate takes a number, got 'fast'"),
    ("generate.py", ["--max_new_tokens", "1.5"], "--max_new_tokens takes an integer, got '1.5'"),
    ("scripts/make_tiny_model.py", ["--layers=two"], "--layers takes an integer, got 'two'"),
])
def test_wrong_types_fail_before_any_work(script, args, message, tmp_path):
    proc, _ = cli(script, *args, *outputs_into(tmp_path, entry_of(script)), cwd=tmp_path)
    assert one_error_line(proc) == f"error: {message}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["--max_new_tokens", "0"], "--max_new_tokens must be a positive integer, got 0"),
    (["--repetition_penalty", "0"], "--repetition_penalty must be > 0, got 0"),
    (["--top_p", "1.5"], "--top_p must be in (0, 1], got 1.5"),
])
def test_generate_decoding_ranges_fail_before_loading(args, message, tmp_path):
    proc, _ = cli("generate.py", "--instruction", "hi", *args, *outputs_into(tmp_path, entry_of("generate.py")),
                  cwd=tmp_path)
    assert one_error_line(proc) == f"error: {message}"
    assert list(tmp_path.iterdir()) == []


def finetune_defaults() -> dict:
    from alpaca_cot.train.finetune import finetune

    return {name: p.default for name, p in inspect.signature(finetune).parameters.items()}


def test_range_checks_accept_the_defaults_and_their_edges():
    flags = finetune_defaults()
    check_finetune_flags(**flags)
    check_finetune_flags(**dict(flags, num_epochs=0, max_steps=5, lora_dropout=0.0, warmup_steps=0,
                                val_set_size=0, seed=0, save_total_limit=None, report_to="tensorboard"))
    with pytest.raises(UserError, match="--num_epochs"):
        check_finetune_flags(**dict(flags, num_epochs=0))


# ---- accepted syntax ----

def test_fire_syntax_is_accepted():
    from alpaca_cot.train.finetune import finetune

    got = parse_argv(finetune, ["--micro-batch-size", "4", "--local-rank=3", "--nopacking", "--train_on_inputs",
                                "--learning_rate=1e-4", "--lora_target_modules", "q_proj,k_proj",
                                "--num_epochs", "1", "--gradient_checkpointing", "None", "--seed", "-1"])
    assert got == dict(micro_batch_size=4, local_rank=3, packing=False, train_on_inputs=True, learning_rate=1e-4,
                       lora_target_modules=("q_proj", "k_proj"), num_epochs=1, gradient_checkpointing=None, seed=-1)
    assert parse_argv(finetune, ["--local_rank", "0", "--lora_target_modules", "[q_proj,v_proj]"]) == dict(
        local_rank=0, lora_target_modules=["q_proj", "v_proj"])


def test_generate_keeps_instructions_as_text():
    main = entry_function(ROOT / "generate.py", "main")
    assert parse_argv(main, ["--instruction", "None", "--input", "1, 2"]) == dict(instruction="None", input="1, 2")


def test_positional_parameters_take_arguments():
    main = entry_function(ROOT / "scripts" / "download_data.py", "main")
    assert parse_argv(main, ["alpaca", "--out", "x.json"]) == dict(name="alpaca", out="x.json")
    assert parse_argv(main, ["--name", "belle"]) == dict(name="belle")


# ---- --help ----

@pytest.mark.parametrize("entry", ENTRIES, ids=entry_id)
def test_help_lists_every_flag(entry):
    proc, _ = cli(entry[0], "--help")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-2000:]
    module_doc = entry[0].read_text().split('"""')[1].strip()
    assert proc.stdout.startswith(module_doc.splitlines()[0])
    for name in parameters(entry):
        assert re.search(rf"^  (--{name}=|{name} )", proc.stdout, re.M), name
    assert not re.search("FIRE_METADATA|SYNOPSIS|NAME\n", proc.stdout)


def test_short_help():
    proc, _ = cli("generate.py", "-h")
    assert proc.returncode == 0 and "  --instruction=None " in proc.stdout


def test_help_into_a_closed_pipe_is_quiet():
    """`--help | head -1`: the reader has left; the script ends with 0 and no traceback."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "finetune.py"), "--help"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # before the script has printed anything: its print meets a closed pipe
    assert proc.wait(timeout=60) == 0
    assert b"Traceback" not in proc.stderr.read()


def test_text_flags_stay_text():
    """A path or name that looks like a number (--out 2024) reaches the script as text, not as an int."""
    def main(out: str = None, name: str = "x", count: int = 1):
        """Args:
            out: a folder.
            name: a name.
            count: a number.
        """
    assert parse_argv(main, ["--out", "2024", "--name", "1e3", "--count", "7"]) == {"out": "2024", "name": "1e3", "count": 7}
    assert parse_argv(main, ["--out", "None"]) == {"out": None}
