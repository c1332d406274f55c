"""Faults: nothing lost (sources, adapters, checkpoints, answers), nothing late (exact resume after
kill -9), and one `error:` line instead of a traceback. Tiny LLaMA on the CPU, few steps."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from alpaca_cot.infer import answer as answering
from alpaca_cot.model import adapters
from alpaca_cot.train import checkpoints
from alpaca_cot.cli import UserError, exit_on_interrupt
from alpaca_cot.train.finetune import finetune
from conftest import ROOT, error_lines, free_port, run_cli, run_python

ENV = dict(os.environ, OMP_NUM_THREADS="1")


# The same sums in this process as in the subprocesses (OMP_NUM_THREADS=1): bitwise comparisons.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small_data(tmp_path_factory, train_file) -> Path:
    """20 records under cutoff 128 (4 prompts are too long): 5 steps per epoch at batch 4."""
    path = tmp_path_factory.mktemp("faults-data") / "small.json"
    path.write_text(json.dumps(json.loads(train_file.read_text(encoding="utf-8"))[::13][:24]), encoding="utf-8")
    return path


def flags(base, data, out, **overrides) -> dict:
    f = dict(base_model=str(base), data=str(data), output_dir=str(out), quantization="none", batch_size=4,
             micro_batch_size=2, num_epochs=2, learning_rate=1e-2, cutoff_len=128, val_set_size=0, warmup_steps=1,
             save_steps=3, logging_steps=1, report_to="none", lora_target_modules="q_proj,v_proj")
    f.update(overrides)
    return f


def as_cli(f: dict) -> list[str]:
    return [x for k, v in f.items() for x in (f"--{k}", str(v))]


def adapter_of(folder: Path) -> dict:
    return load_file(folder / "adapter_model.safetensors")


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)



def one_error_line(code, err, *words):
    assert code == 2 and "Traceback" not in err, err[-2000:]
    lines = error_lines(err)
    assert len(lines) == 1 and all(w in lines[0] for w in words), (words, err[-2000:])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_llama, small_data) -> Path:
    """An uninterrupted run of 10 steps over two epochs; checkpoints at 3, 6, 9 and 10 (3 kept)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    finetune(**flags(tiny_llama, small_data, out))
    return out


# ---- exact resume after kill -9 ----

KILL_POINTS = [("step:7", "checkpoint-6"), ("save:9", "checkpoint-6"), ("final", "checkpoint-10")]


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory, tiny_llama, small_data):
    """tests/finetune_killed.py at every kill point, all started at once, beside the reference run (each spends
    most of its time importing, on one core): point -> (its folder, holding run/ and output.txt; its process)."""
    work, started = tmp_path_factory.mktemp("killed"), {}
    for point, _ in KILL_POINTS:
        folder = work / point.replace(":", "-")
        folder.mkdir()
        with open(folder / "output.txt", "w") as log:
            started[point] = folder, subprocess.Popen(
                [sys.executable, "tests/finetune_killed.py", *as_cli(flags(tiny_llama, small_data, folder / "run"))],
                cwd=ROOT, env=dict(ENV, KILL_AT=point), stdout=log, stderr=subprocess.STDOUT)
    yield started
    for _, proc in started.values():  # a test that was not selected did not wait for its run
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("point,resumes_from", KILL_POINTS)
def test_killed_run_resumes_to_the_same_adapter(point, resumes_from, killed_runs, reference, tiny_llama, small_data,
                                                capsys):
    folder, proc = killed_runs[point]
    out, returncode = folder / "run", proc.wait(timeout=300)
    f = flags(tiny_llama, small_data, out)
    assert returncode == -signal.SIGKILL, (folder / "output.txt").read_text()[-3000:]
    if point == "final":  # what generate.py reads: the committed save, finished
        adapters.check_adapter(out)
        assert same_tensors(adapter_of(out), adapter_of(reference))
    capsys.readouterr()
    trainer = finetune(**f, resume_from_checkpoint="auto")
    log = capsys.readouterr().out
    assert f"resuming from {out / resumes_from}" in log
    assert point != "save:9" or "skipping" in log and "checkpoint-9" in log
    assert trainer.state.global_step == 10
    assert same_tensors(adapter_of(out), adapter_of(reference))
    summary, want = (json.loads((d / "train_summary.json").read_text()) for d in (out, reference))
    assert summary["train_loss"] == want["train_loss"]  # the whole run's, not the resumed part's
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging or commit folder left


def test_length_sampler_is_seeded_per_epoch():
    from alpaca_cot.train.resumable import EpochSeededLengthSampler

    lengths = [(i * 37) % 101 for i in range(50)]
    sampler = EpochSeededLengthSampler(lengths, batch_size=8, seed=3)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(first) == sorted(second) == list(range(50)) and first != second
    again = EpochSeededLengthSampler(lengths, batch_size=8, seed=3)
    again.set_epoch(1)
    assert list(again) == second  # a resumed epoch draws the same order


def test_run_loss_counts_every_logged_step():
    from alpaca_cot.train.resumable import run_loss

    history = [{"loss": 4.0, "step": 2}, {"eval_loss": 9.0, "step": 2}, {"loss": 1.0, "step": 3}]
    assert run_loss(history) == 3.0  # (4 x 2 + 1 x 1) / 3
    assert run_loss([]) is None


def test_ddp_reports_the_loss_of_a_single_process(tmp_path, tiny_llama, small_data):
    """torchrun's ranks each see half of each batch: the run's loss is the same as one process's (which trains
    here while the ranks start)."""
    f = flags(tiny_llama, small_data, tmp_path / "two", batch_size=8, num_epochs=1, max_steps=3, save_steps=100,
              lora_dropout=0.0, logging_steps=10)
    ranks = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                              str(free_port()), "finetune.py", *as_cli(f)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    finetune(**dict(f, output_dir=str(tmp_path / "one")))
    stderr = ranks.communicate(timeout=300)[1]
    assert ranks.returncode == 0, stderr[-3000:]
    one, two = (json.loads((tmp_path / d / "train_summary.json").read_text())["train_loss"] for d in ("one", "two"))
    assert two == pytest.approx(one, rel=1e-4)


# ---- finetune's output folder ----

def test_auto_resume_never_trains_over_an_adapter_without_checkpoints(reference, tiny_llama, small_data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in adapters.ADAPTER_FILES:
        (out / name).write_bytes((reference / name).read_bytes())
    before = (out / "adapter_model.safetensors").read_bytes()
    with pytest.raises(UserError, match="no checkpoint to resume from"):
        finetune(**flags(tiny_llama, small_data, out, max_steps=1), resume_from_checkpoint="auto")
    with pytest.raises(UserError, match="would train over it"):
        finetune(**flags(tiny_llama, small_data, out, max_steps=1), resume_from_checkpoint=str(reference / "checkpoint-6"))
    assert (out / "adapter_model.safetensors").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == sorted(adapters.ADAPTER_FILES)


def test_checkpoints_of_another_run_are_refused_or_cleared(reference, tiny_llama, small_data, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    other = flags(tiny_llama, small_data, out, learning_rate=5e-3, max_steps=1)
    with pytest.raises(UserError, match="different run.*learning_rate"):
        finetune(**other, resume_from_checkpoint="auto")
    with pytest.raises(UserError, match="different run"):
        finetune(**dict(other, output_dir=str(tmp_path / "new")), resume_from_checkpoint=str(reference / "checkpoint-6"))
    assert not (tmp_path / "new").exists()
    trainer = finetune(**other, overwrite=True, resume_from_checkpoint="auto")
    assert trainer.state.global_step == 1  # started afresh: the earlier run's checkpoint-12 was not picked up
    assert [p.name for p in checkpoints.checkpoints(out)] == ["checkpoint-1"]
    assert json.loads((out / "run.json").read_text())["learning_rate"] == 5e-3


def test_output_dir_in_the_base_model_is_refused(tiny_llama, small_data):
    before = {p.name: p.read_bytes() for p in tiny_llama.iterdir() if p.is_file()}
    for out, words in ((tiny_llama, "is the input --base_model"), (tiny_llama / "out", "lies inside the input --base_model"),
                       (tiny_llama.parent, "contains the input --base_model"),
                       (small_data.parent, "contains the input --data")):
        with pytest.raises(UserError, match=words):
            finetune(**flags(tiny_llama, small_data, out, max_steps=1), overwrite=True)
    assert {p.name: p.read_bytes() for p in tiny_llama.iterdir() if p.is_file()} == before


def test_half_written_checkpoint_is_skipped(tmp_path):
    for step, complete in ((2, True), (4, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text('{"global_step": 2}')
    (tmp_path / "checkpoint-6").mkdir()
    (tmp_path / "checkpoint-6" / "trainer_state.json").write_text('{"global_st')  # cut mid-write
    warnings = []
    last, skipped = checkpoints.last_complete(tmp_path, warn=warnings.append)
    assert last == tmp_path / "checkpoint-2" and len(skipped) == len(warnings) == 2


def test_adapter_config_and_weights_always_belong_together(reference, tmp_path, monkeypatch):
    """A kill between two moves of the final save: what a reader sees is the new adapter whole."""
    import shutil

    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    old_config = {"r": 2, "peft_type": "LORA"}
    (out / "adapter_config.json").write_text(json.dumps(old_config))
    (out / "adapter_model.safetensors").write_bytes(b"old weights")

    class Saver:
        def save_pretrained(self, folder):
            for name in adapters.ADAPTER_FILES:
                shutil.copy(reference / name, Path(folder) / name)

    moves = []
    real_replace = os.replace

    def killed_after_one_move(src, dst):
        if adapters.COMMIT in str(src) and moves:
            raise KeyboardInterrupt  # stands for the kill: nothing after this line runs
        moves.append(src)
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_after_one_move)
    with pytest.raises(KeyboardInterrupt):
        adapters.save_adapter(Saver(), SimpleNamespace(save_pretrained=lambda folder: None), out)
    monkeypatch.setattr(os, "replace", real_replace)
    adapters.check_adapter(out)  # generate.py's and the export's check finishes the committed save
    assert (out / "adapter_config.json").read_bytes() == (reference / "adapter_config.json").read_bytes()
    assert same_tensors(adapter_of(out), adapter_of(reference))
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == sorted([*adapters.ADAPTER_FILES, "notes.txt"])


# ---- export ----

def load_export():
    import importlib.util

    spec = importlib.util.spec_from_file_location("export_hf_checkpoint", ROOT / "scripts" / "export_hf_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_never_deletes_a_source(reference, tiny_llama, tmp_path):
    import shutil

    base, adapter = tmp_path / "models" / "base", tmp_path / "models" / "adapter"
    shutil.copytree(tiny_llama, base)
    adapter.mkdir()
    for name in adapters.ADAPTER_FILES:
        shutil.copy(reference / name, adapter / name)
    export = load_export()
    for out in (tmp_path / "models", tmp_path, adapter / "merged", base / "merged"):
        with pytest.raises(UserError, match="contains the input|lies inside the input"):
            export.main(base_model=str(base), lora_weights=str(adapter), out=str(out), overwrite=True)
    assert (base / "config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    with pytest.raises(UserError, match="not a previous export"):
        export.main(base_model=str(base), lora_weights=str(adapter), out=str(notes), overwrite=True)
    assert (notes / "todo.txt").read_text() == "mine"
    killed = subprocess.Popen(["true"])
    killed.wait()
    (tmp_path / f".merged.saving-{killed.pid}").mkdir()  # left by a killed export (its process is gone)
    export.main(base_model=str(base), lora_weights=str(adapter), out=str(tmp_path / "merged"), dtype="float32")
    export.main(base_model=str(base), lora_weights=str(adapter), out=str(tmp_path / "merged"), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged", "models", "notes"]


# ---- one-line errors ----

def test_bad_data_files_fail_in_one_line(tmp_path, tiny_llama, monkeypatch, capsys):
    cases = {
        "nested.json": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        "surrogate.json": ('[{"instruction": "a \\ud800 b", "output": "x"}]', "lone surrogate"),
        "latin1.json": (b'[{"instruction": "caf\xe9", "output": "x"}]', "not UTF-8"),
        "folder.json": (None, "is a folder"),
    }
    for name, (content, words) in cases.items():
        path = tmp_path / name
        if content is None:
            path.mkdir()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        code, err = run_cli(finetune, ["--base_model", tiny_llama, "--data", path, "--output_dir", tmp_path / "out",
                                       "--quantization", "none"], monkeypatch, capsys)
        one_error_line(code, err, str(path), words)
    os.mkfifo(tmp_path / "fifo.json")
    code, err = run_cli(finetune, ["--base_model", tiny_llama, "--data", tmp_path / "fifo.json", "--output_dir",
                                   tmp_path / "out"], monkeypatch, capsys)
    one_error_line(code, err, "not a regular file")
    (tmp_path / "ok.json").write_text('[{"instruction": "a", "output": "b"}]')
    real_read_text = Path.read_text

    def unreadable(path, *args, **kwargs):  # chmod 000 does not stop root, who runs the tests here
        if path.name == "ok.json":
            raise PermissionError(13, "Permission denied")
        return real_read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", unreadable)
    code, err = run_cli(finetune, ["--base_model", tiny_llama, "--data", tmp_path / "ok.json", "--output_dir",
                                   tmp_path / "out"], monkeypatch, capsys)
    one_error_line(code, err, "cannot read", "Permission denied")
    assert not (tmp_path / "out").exists()


def test_output_dir_that_is_a_file_or_read_only(tmp_path, tiny_llama, small_data, monkeypatch, capsys):
    (tmp_path / "file").write_text("x")
    read_only = Path("/sys/alpaca-cot-out")  # sysfs: read-only even for root
    for out, words in ((tmp_path / "file", "is a file"), (tmp_path / "file" / "sub", "is a file"),
                       (read_only, "cannot write")):
        if out == read_only and os.access("/sys", os.W_OK) and not Path("/sys").is_mount():
            continue
        code, err = run_cli(finetune, ["--base_model", tiny_llama, "--data", small_data, "--output_dir", out],
                            monkeypatch, capsys)
        one_error_line(code, err, str(out), words)
    assert (tmp_path / "file").read_text() == "x"


def test_truncated_adapter_fails_before_the_base_loads(reference, tmp_path, monkeypatch):
    from alpaca_cot.infer import generation
    from alpaca_cot.model import models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the base model was loaded"))
    weights = (reference / "adapter_model.safetensors").read_bytes()
    for cut in (0, 5, len(weights) // 2, len(weights) - 1):
        folder = tmp_path / f"cut{cut}"
        folder.mkdir()
        (folder / "adapter_config.json").write_bytes((reference / "adapter_config.json").read_bytes())
        (folder / "adapter_model.safetensors").write_bytes(weights[:cut])
        with pytest.raises(UserError, match="empty or truncated"):
            generation.Generator(str(reference), str(folder))
    adapters.check_adapter(reference)  # the whole file passes


def test_speed_summary_without_a_measured_step():
    from alpaca_cot.train.throughput import throughput_callback

    collator = SimpleNamespace(real_tokens=0, padded_tokens=0)
    speed = throughput_callback(collator, warmup_steps=1)
    args, state = SimpleNamespace(eval_strategy="no"), SimpleNamespace(global_step=0, max_steps=2)
    speed.on_train_begin(args, state, None)
    for step in (1, 2):  # steps whose batches were fetched before the window opened: no tokens inside it
        state.global_step = step
        speed.on_step_end(args, state, None)
    speed.on_train_end(args, state, None)
    assert speed.metrics() == {}


# ---- generate.py ----

@pytest.fixture(scope="module")
def generate_main():
    import generate

    return generate.main


def test_generate_output_file_rules(tmp_path, tiny_llama, reference, generate_main, monkeypatch, capsys):
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"instruction": "Hi"}\n')
    (tmp_path / "taken.jsonl").write_text("earlier answers\n")
    (tmp_path / "folder").mkdir()
    common = ["--base_model", tiny_llama, "--lora_weights", reference, "--input_file", questions]
    for output, words in ((questions, "is the input --input_file"), (tmp_path / "taken.jsonl", "--overwrite"),
                          (tmp_path / "folder", "is a folder")):
        code, err = run_cli(generate_main, [*common, "--output_file", output], monkeypatch, capsys)
        one_error_line(code, err, str(output), words)
    assert questions.read_text() == '{"instruction": "Hi"}\n'
    assert (tmp_path / "taken.jsonl").read_text() == "earlier answers\n"


def test_instruction_longer_than_the_context(tiny_llama):
    from alpaca_cot.infer.generation import Generator, decoding_kwargs

    gen = Generator(str(tiny_llama), None)
    with pytest.raises(UserError, match="exceeds the model's context of 2048"):
        gen.generate([gen.prompt("word " * 2100)], **decoding_kwargs(max_new_tokens=1))
    records = [{"instruction": "Hi", "input": ""}, {"instruction": "word " * 2100, "input": ""}]
    with pytest.raises(UserError, match="record 1 is"):
        answering.answer_file(gen, records, "q.json", "/nonexistent/never-written.jsonl", 1, False,
                              decoding_kwargs(max_new_tokens=1))


class InterruptedGen:
    """Ctrl-C arrives while the model works."""

    def prompt(self, instruction, input="", cot=False):
        return instruction

    def check_fits(self, *a, **k):
        pass

    def generate(self, prompts, **decoding):
        raise KeyboardInterrupt

    stream = generate


def test_ctrl_c_exits_130_in_one_line(tmp_path, monkeypatch, capsys):
    from alpaca_cot.infer.generation import decoding_kwargs

    decoding = decoding_kwargs(max_new_tokens=4)
    out = tmp_path / "answers.jsonl"
    batch = exit_on_interrupt(lambda: answering.answer_file(
        InterruptedGen(), [{"instruction": "Hi", "input": ""}], "q.json", out, 1, False, decoding))
    monkeypatch.setattr("builtins.input", lambda prompt: (_ for _ in ()).throw(KeyboardInterrupt))
    at_prompt = exit_on_interrupt(lambda: answering.interactive(InterruptedGen(), False, decoding))
    for fn in (batch, at_prompt):
        with pytest.raises(SystemExit) as e:
            fn()
        assert e.value.code == 130
        err = capsys.readouterr().err
        assert error_lines(err) == ["error: interrupted"]
        assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no answers, no temp file


def as_in_a_terminal():
    """Ctrl-C as a terminal's foreground job gets it: a shell that starts the suite in the background (`make test
    &`) has it ignore SIGINT, which every child inherits, and Python then never turns SIGINT into Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_while_streaming_exits_cleanly(tiny_llama, tmp_path):
    log = tmp_path / "stdout"
    with open(log, "w") as stdout:
        proc = subprocess.Popen([sys.executable, "generate.py", "--base_model", str(tiny_llama), "--no_adapter",
                                 "--max_new_tokens", "1500"], cwd=ROOT, env=ENV, stdin=subprocess.PIPE,
                                stdout=stdout, stderr=subprocess.PIPE, text=True, preexec_fn=as_in_a_terminal)
        proc.stdin.write("Write a long story.\n")
        proc.stdin.flush()
        deadline = time.time() + 120
        while "### Response: " not in log.read_text() or len(log.read_text().split("### Response: ")[1]) < 20:
            assert time.time() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, (proc.returncode, err[-2000:], log.read_text()[-2000:])
    assert error_lines(err) == ["error: interrupted"], err[-2000:]


def test_sigterm_leaves_no_temp_file(tmp_path):
    code = ("import os, signal, sys\nfrom alpaca_cot.io import atomic_open\n"
            f"with atomic_open({str(tmp_path / 'answers.jsonl')!r}) as f:\n"
            "    f.write('half')\n    os.kill(os.getpid(), signal.SIGTERM)\n    signal.pause()\n")
    proc = run_python("-c", code, timeout=60)
    assert proc.returncode in (143, -signal.SIGTERM)
    assert list(tmp_path.iterdir()) == []


# ---- the web page ----

def test_web_page_stays_local_unless_exposed():
    assert answering.check_serving() is None
    for kwargs in (dict(share=True), dict(server_name="0.0.0.0"), dict(server_name="my-host.example")):
        with pytest.raises(UserError, match="--expose"):
            answering.check_serving(**kwargs)
        answering.check_serving(**kwargs, expose=True)
    assert answering.check_serving("localhost", auth="ann:secret") == ("ann", "secret")
    with pytest.raises(UserError, match="user:password"):
        answering.check_serving(auth="ann")


def test_web_request_is_capped(monkeypatch):
    calls = []
    gen = SimpleNamespace(prompt=lambda *a: "p", generate=lambda prompts, **d: calls.append(d) or ["answer"])
    assert answering.web_answer(gen, "Hi", max_new_tokens=2048).startswith("error: at most")
    assert answering.web_answer(gen, "Hi", max_new_tokens=1024, num_beams=4).startswith("error: at most")
    assert calls == []
    assert answering.web_answer(gen, "Hi", max_new_tokens=512, num_beams=4) == "answer"

    launched, sliders = {}, {}

    def slider(low, high, value, step=None, label=""):
        sliders[label.split(" (")[0]] = high

    class Interface:
        def __init__(self, **kwargs):
            pass

        def launch(self, **kwargs):
            launched.update(kwargs)

    fake = SimpleNamespace(Textbox=lambda **k: None, Checkbox=lambda **k: None, Slider=slider, Interface=Interface)
    monkeypatch.setitem(sys.modules, "gradio", fake)
    answering.serve(gen, "127.0.0.1", 7860, False, ("ann", "secret"))
    assert launched["auth"] == ("ann", "secret") and launched["server_name"] == "127.0.0.1"
    assert sliders["Max new tokens"] <= answering.WEB_MAX_NEW_TOKENS and sliders["Beams"] <= answering.WEB_MAX_BEAMS


def test_resume_in_the_other_rank_order_is_refused(reference, tiny_llama, small_data, tmp_path):
    """--balance_ranks changes the data order over several GPUs: resuming with the other value would skip
    the steps already trained in another order than they were trained in."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    with pytest.raises(UserError, match="different run.*balance_ranks"):
        finetune(**flags(tiny_llama, small_data, out, max_steps=12, balance_ranks=False), resume_from_checkpoint="auto")
    assert "balance_ranks" not in json.loads((out / "run.json").read_text())  # earlier runs' records unchanged


def test_world_size_defines_a_run_only_in_transformers_order():
    """The balanced order trains the same records in each step on any number of processes (test_sampler), so a
    run may resume on another number of GPUs; transformers' order (--balance_ranks False) depends on that
    number, which then defines the run: resuming with another one is refused as a different run."""
    from alpaca_cot.train.checkpoints import differences, run_record

    config = dict(base_model="unused", world_size=4, records=10)
    assert "world_size" not in run_record(config, [])
    unbalanced = run_record({**config, "balance_ranks": False}, [])
    assert unbalanced["world_size"] == 4
    assert differences(unbalanced, run_record({**config, "balance_ranks": False, "world_size": 2}, [])) == ["world_size"]
