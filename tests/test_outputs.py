"""The output rule (alpaca_cot/outputs.py, alpaca_cot/io.py) and every case of issue 20 it closes: nothing
overwritten, nothing half-written, one line instead of a traceback, nothing silent. Scripts run in this process
(cli.run as their command line runs it), on the tiny LLaMA; only a kill -9 needs a child process."""

import errno
import importlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import pytest

from alpaca_cot.model import adapters

from alpaca_cot.data import catalog

from alpaca_cot import io, outputs
from alpaca_cot.cli import UserError
from alpaca_cot.outputs import Output, check_outputs
from conftest import ROOT, error_lines, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

RECORDS = [{"instruction": f"Say the number {i}.", "input": "", "output": f"{i}"} for i in range(8)]
ENOSPC = OSError(errno.ENOSPC, "No space left on device")


# ---- helpers ----

@cache
def script(name: str):
    """scripts/<name>.py (or generate.py) as a module."""
    path = ROOT / (f"{name}.py" if name == "generate" else f"scripts/{name}.py")
    spec = importlib.util.spec_from_file_location(f"outputs_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module



def one_line(code, err, *words) -> str:
    assert code == 2 and "Traceback" not in err, err[-3000:]
    lines = error_lines(err)
    assert len(lines) == 1 and all(str(w) in lines[0] for w in words), (words, err[-3000:])
    return lines[0]


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def full_disk(monkeypatch, free: int = 1 << 20):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1 << 40, (1 << 40) - free, free))


class FailingFile:
    """A file whose writes fail as on a full disk."""

    def __init__(self, f):
        self.f = f

    def write(self, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    writelines = write

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def disk_fills_up(monkeypatch):
    """io's atomic writes meet a full disk on their first write."""
    monkeypatch.setattr(io, "open", lambda *a, **k: FailingFile(open(*a, **k)), raising=False)


@pytest.fixture(scope="module")
def read_only() -> Path:
    """A folder nobody can write in, root included: sysfs."""
    if not Path("/sys").is_mount():
        pytest.skip("no sysfs at /sys: no folder that is read-only for root")
    return Path("/sys/alpaca-cot-test")


@pytest.fixture
def data_file(tmp_path) -> Path:
    path = tmp_path / "data.json"
    path.write_text(json.dumps(RECORDS))
    return path


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_llama) -> Path:
    """An untrained LoRA adapter for the tiny LLaMA, saved as finetune saves one (with the tokenizer)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from alpaca_cot.model import models

    folder = tmp_path_factory.mktemp("outputs-adapter") / "adapter"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_llama)),
                           LoraConfig(task_type="CAUSAL_LM", r=2, target_modules=["q_proj", "v_proj"]))
    adapters.save_adapter(model, models.load_tokenizer(str(tiny_llama)), folder)
    return folder


def tsv_dir(tmp_path, shared_dir) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "creak_train.tsv").write_text("".join((shared_dir / "data" / "flan_cot" / "creak_train.tsv").read_text(
        encoding="utf-8").splitlines(keepends=True)[:20]), encoding="utf-8")
    return src


# ---- the rule itself ----

def test_an_output_may_not_be_contain_or_lie_inside_an_input(tmp_path):
    (tmp_path / "models" / "base").mkdir(parents=True)
    data = tmp_path / "data.json"
    data.write_text("[]")
    inputs = [("--data", data), ("--base_model", tmp_path / "models" / "base")]
    for out, kind, words in ((data, "json", "is the input --data"), (tmp_path / "models", "folder", "contains the input"),
                             (tmp_path / "models" / "base" / "x.json", "json", "lies inside the input --base_model"),
                             (tmp_path / "link.json", "json", "is the input --data")):
        if out.name == "link.json":
            out.symlink_to(data)  # the same file through a link
        with pytest.raises(UserError, match=words):
            check_outputs([Output(out, "--out", kind)], inputs)
    with pytest.raises(UserError, match="is also --eval_out"):
        check_outputs([Output(tmp_path / "a.json", "--eval_out", "json"), Output(tmp_path / "a.json", "--out", "json")])
    assert data.read_text() == "[]"


def test_an_existing_output_needs_overwrite_and_must_be_ours(tmp_path):
    cases = {"json": ('[{"a": 1}]', "not JSON"), "jsonl": ('{"a": 1}\n{"b": 2}\n', "[1, 2]\n"),
             "text": ("# a report\n", b"\x00\x01binary")}
    for kind, (ours, foreign) in cases.items():
        path = tmp_path / f"out.{kind}"
        path.write_text(ours)
        with pytest.raises(UserError, match="already exists; pass --overwrite to replace it"):
            check_outputs([Output(path, "--out", kind)])
        check_outputs([Output(path, "--out", kind)], overwrite=True)
        path.write_bytes(foreign if isinstance(foreign, bytes) else foreign.encode())
        with pytest.raises(UserError, match="as this script writes; --overwrite replaces only that"):
            check_outputs([Output(path, "--out", kind)], overwrite=True)
    folder = tmp_path / "folder"
    folder.mkdir()
    check_outputs([Output(folder, "--out", "folder", marker=io.MARKER)])  # empty: nothing to lose
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"not a folder this script wrote \(no .alpaca-cot.json\)"):
        check_outputs([Output(folder, "--out", "folder", marker=io.MARKER)], overwrite=True)
    (folder / io.MARKER).write_text("{}")
    check_outputs([Output(folder, "--out", "folder", marker=io.MARKER)], overwrite=True)
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "x").write_text("")
    with pytest.raises(UserError, match="is not empty and is not a study folder"):
        check_outputs([Output(tmp_path / "study", "--out", "folder", marker="config.json", existing="continue")],
                      what="a study folder")


def test_writability_and_room_are_checked_first(tmp_path, read_only, monkeypatch):
    with pytest.raises(UserError, match=f"--out {read_only}/x.json: cannot write in /sys"):
        check_outputs([Output(read_only / "x.json", "--out", "json")])
    full_disk(monkeypatch, free=100 << 20)
    check_outputs([Output(tmp_path / "a.json", "--out", "json", 40 << 20), Output(tmp_path / "b.json", "--out", "json")])
    with pytest.raises(UserError, match=r"--out .*a.json: the output needs about 10\d.\d MiB .* 100.0 MiB free"):
        # the outputs on one disk are summed, with the margin
        check_outputs([Output(tmp_path / "a.json", "--out", "json", 40 << 20),
                       Output(tmp_path / "b.json", "--out", "json", 40 << 20)])
    assert list(tmp_path.iterdir()) == []  # a probe is created and removed


def test_json_sizes_are_the_bytes_written(tmp_path):
    for records in ([], [{"instruction": "é\nü", "output": "中文", "history": [["a", "b"]]}] * 3, [[1, {"x": None}], "s"]):
        io.write_json_atomic(records, tmp_path / "a.json")
        io.write_jsonl_atomic(records, tmp_path / "a.jsonl")
        assert io.json_size(records) == (tmp_path / "a.json").stat().st_size
        assert io.json_size(records, lines=True) == (tmp_path / "a.jsonl").stat().st_size


def test_a_failed_write_is_one_line_and_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "answers.jsonl"
    path.write_text('{"old": 1}\n')
    disk_fills_up(monkeypatch)
    with pytest.raises(UserError, match=rf"{path}: could not write it \(No space left on device\); what was there is "):
        io.write_jsonl_atomic([{"new": 1}], path)
    assert path.read_text() == '{"old": 1}\n' and sorted(tmp_path.iterdir()) == [path]
    with pytest.raises(UserError, match=r"could not write it \(file write failed\)"), io.write_errors(path):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")  # what torch.save raises on a full disk
    with pytest.raises(ConnectionResetError), io.write_errors(path, any_oserror=False):
        raise ConnectionResetError(errno.ECONNRESET, "a rank went away")  # not a write: stays what it is


def test_temporaries_of_dead_processes_are_swept_and_a_parked_folder_put_back(tmp_path):
    dead, alive = dead_pid(), os.getpid()
    for pid in (dead, alive):
        (tmp_path / f".answers.jsonl.{pid}.tmp").write_text("half")
        (tmp_path / f".merged.saving-{pid}").mkdir()
        (tmp_path / f".saving-{pid}-abc123").mkdir()
    (tmp_path / f".export.old-{dead}").mkdir()  # killed between the two renames of a swap
    (tmp_path / f".export.old-{dead}" / "model.safetensors").write_text("the previous export")
    (tmp_path / "notes.tmp").write_text("not ours")
    io.sweep(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f".answers.jsonl.{alive}.tmp", f".merged.saving-{alive}", f".saving-{alive}-abc123", "export", "notes.tmp"])
    assert (tmp_path / "export" / "model.safetensors").read_text() == "the previous export"


def test_kill_9_mid_write_leaves_a_temporary_that_the_next_write_sweeps(tmp_path):
    path = tmp_path / "answers.jsonl"
    code = ("import os, signal\nfrom alpaca_cot.io import atomic_open\n"
            f"with atomic_open({str(path)!r}) as f:\n"
            "    f.write('half an answer'); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert [p.name for p in tmp_path.iterdir()] == [f".answers.jsonl.{proc.pid}.tmp"]
    io.write_jsonl_atomic([{"output": "whole"}], path)
    assert [p.name for p in tmp_path.iterdir()] == ["answers.jsonl"]


# ---- data loss ----

def test_study_refuses_an_out_holding_its_input(tiny_llama, shared_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "study"
    (out / "data").mkdir(parents=True)
    alpaca = out / "data" / "alpaca.json"  # what the study would write over
    shutil.copy(shared_dir / "data" / "alpaca_cleaned.sample.json", alpaca)
    before = alpaca.read_bytes()
    code, err = run_cli(script("study").main, ["--base_model", tiny_llama, "--out", out, "--alpaca", alpaca,
                                               "--belle", shared_dir / "data" / "belle_cn.sample.json",
                                               "--cot_src", shared_dir / "data" / "flan_cot"], monkeypatch, capsys)
    one_line(code, err, f"--out {out} contains the input --alpaca {alpaca}")
    assert alpaca.read_bytes() == before and sorted(p.name for p in out.rglob("*")) == ["alpaca.json", "data"]


def test_format_cot_refuses_an_out_that_is_an_input_tsv(shared_dir, tmp_path, monkeypatch, capsys):
    src = tsv_dir(tmp_path, shared_dir)
    tsv = src / "creak_train.tsv"
    before = tsv.read_bytes()
    for flag in ("--out", "--eval_out"):
        args = ["--src", src, "--datasets", "creak", "--out", tmp_path / "cot.json", "--holdout", "2", flag, tsv,
                "--overwrite"]
        code, err = run_cli(script("format_cot").main, args, monkeypatch, capsys)
        one_line(code, err, f"{flag} {tsv} is the input TSV")
    assert tsv.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_data_stats_refuses_a_json_that_is_the_data(tiny_llama, data_file, monkeypatch, capsys):
    before = data_file.read_bytes()
    code, err = run_cli(script("data_stats").main, ["--data", data_file, "--base_model", tiny_llama, "--json",
                                                    data_file, "--overwrite"], monkeypatch, capsys)
    one_line(code, err, f"--json {data_file} is the input --data")
    assert data_file.read_bytes() == before


def write_predictions(path: Path, output="the answer is yes"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"task": "cot", "dataset": "creak", "instruction": "Is the sky blue? yes or no",
                                "output": output, "gold": "yes"}) + "\n")


def test_evaluate_never_replaces_another_evaluation_without_overwrite(tmp_path, monkeypatch, capsys):
    evaluate = script("evaluate").main
    a, b = tmp_path / "a" / "predictions.jsonl", tmp_path / "b"
    write_predictions(a)
    write_predictions(b / "predictions.jsonl", "the answer is no")
    (b / "summary.json").write_text("{}")
    before = (b / "predictions.jsonl").read_text()
    code, err = run_cli(evaluate, ["--predictions", a, "--out", b], monkeypatch, capsys)
    one_line(code, err, f"{b / 'predictions.jsonl'} already exists; pass --overwrite")
    assert (b / "predictions.jsonl").read_text() == before
    code, err = run_cli(evaluate, ["--predictions", a, "--out", a.parent, "--overwrite"], monkeypatch, capsys)
    one_line(code, err, f"{a} is the input --predictions")  # re-scored over itself
    cot_eval, no_model = tmp_path / "cot_eval.jsonl", tmp_path / "no-model"
    cot_eval.write_text(json.dumps({"dataset": "creak", "instruction": "Is the sky blue? yes or no", "answer": "yes"}))
    no_model.mkdir()
    code, err = run_cli(evaluate, ["--base_model", no_model, "--cot_eval", cot_eval, "--out", b], monkeypatch, capsys)
    one_line(code, err, "already exists; pass --overwrite")  # before a model is loaded (this one is no model)
    assert run_cli(evaluate, ["--predictions", a, "--out", b, "--overwrite"], monkeypatch, capsys)[0] == 0
    assert json.loads((b / "predictions.jsonl").read_text())["output"] == "the answer is yes"


# ---- full disks: checked first, and one line if it fills up anyway ----

def test_finetune_full_disk(tiny_llama, data_file, tmp_path, monkeypatch, capsys):
    import peft
    import torch

    from alpaca_cot.train.finetune import finetune

    out = tmp_path / "out"
    args = ["--base_model", tiny_llama, "--data", data_file, "--output_dir", out, "--quantization", "none",
            "--batch_size", "4", "--micro_batch_size", "4", "--max_steps", "2", "--save_steps", "1",
            "--val_set_size", "0", "--report_to", "none", "--lora_target_modules", "q_proj", "--cutoff_len", "64"]
    with monkeypatch.context() as m:
        full_disk(m)
        code, err = run_cli(finetune, args, m, capsys)
    one_line(code, err, f"--output_dir {out}: the output needs about", "1.0 MiB free")
    assert not out.exists()  # refused before the first write
    for name, failure in (("torch.save", RuntimeError("[enforce fail at inline_container.cc:672] . "
                                                      "PytorchStreamWriter failed writing file data/0: file write failed")),
                          ("save_pretrained", ENOSPC)):
        with monkeypatch.context() as m:
            def fail(*a, **k):
                raise failure
            m.setattr(*((torch, "save") if name == "torch.save" else (peft.PeftModel, "save_pretrained")), fail)
            code, err = run_cli(finetune, [*args, "--overwrite"], m, capsys)
        one_line(code, err, f"{out}: could not write it", "resume with --resume_from_checkpoint auto")


def test_generate_overwrite_on_a_full_disk(tiny_llama, adapter, tmp_path, monkeypatch, capsys):
    from alpaca_cot.model import models

    questions, answers = tmp_path / "q.jsonl", tmp_path / "a.jsonl"
    questions.write_text('{"instruction": "Hi"}\n')
    answers.write_text('{"instruction": "Hi", "input": "", "output": "earlier"}\n')
    args = ["--base_model", tiny_llama, "--lora_weights", adapter, "--input_file", questions, "--output_file",
            answers, "--overwrite", "--max_new_tokens", "2"]
    with monkeypatch.context() as m:
        full_disk(m)
        m.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
        one_line(*run_cli(script("generate").main, args, m, capsys), f"--output_file {answers}: the output needs about")
    with monkeypatch.context() as m:
        disk_fills_up(m)
        one_line(*run_cli(script("generate").main, args, m, capsys), f"{answers}: could not write it (No space left")
    assert answers.read_text() == '{"instruction": "Hi", "input": "", "output": "earlier"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "q.jsonl"]


def test_format_cot_full_disk(shared_dir, tmp_path, monkeypatch, capsys):
    src, out = tsv_dir(tmp_path, shared_dir), tmp_path / "cot.json"
    args = ["--src", src, "--datasets", "creak", "--out", out]
    with monkeypatch.context() as m:
        full_disk(m)
        one_line(*run_cli(script("format_cot").main, args, m, capsys), f"--out {out}: the output needs about")
    with monkeypatch.context() as m:
        disk_fills_up(m)
        one_line(*run_cli(script("format_cot").main, args, m, capsys), f"{out}: could not write it")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_export_counts_every_file_and_a_full_disk_is_one_line(tiny_llama, adapter, tmp_path, monkeypatch, capsys):
    from alpaca_cot.model import merge

    export, out = script("export_hf_checkpoint"), tmp_path / "merged"
    tensors = merge.plan(tiny_llama, merge.load_adapter(adapter), None, "adapter").out_bytes()
    with monkeypatch.context() as m:  # room for the tensors (with the margin), not for the tokenizer beside them
        full_disk(m, free=int(tensors * outputs.SPACE_MARGIN + outputs.SPACE_SLACK) + 1)
        one_line(*run_cli(export.main, ["--base_model", tiny_llama, "--lora_weights", adapter, "--out", out], m, capsys),
                 f"--out {out}: the output needs about")
    with monkeypatch.context() as m:
        m.setattr(merge, "write_safetensors", lambda path, *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, os.strerror(
            errno.ENOSPC), str(path))))
        one_line(*run_cli(export.main, ["--base_model", tiny_llama, "--lora_weights", adapter, "--out", out], m, capsys),
                 f"{out}: could not write it (No space left on device at {tmp_path}/.merged.saving-")
    assert list(tmp_path.iterdir()) == []


# ---- read-only output folders: one line, before any work ----

@pytest.mark.parametrize("name", ["generate", "format_cot", "data_stats", "export_hf_checkpoint", "evaluate", "study",
                                  "download_data"])
def test_a_read_only_output_folder_is_one_line(name, read_only, tiny_llama, adapter, shared_dir, data_file, tmp_path,
                                               monkeypatch, capsys):
    write_predictions(tmp_path / "p.jsonl")
    (tmp_path / "q.jsonl").write_text('{"instruction": "Hi"}\n')
    args = {"generate": ["--base_model", tiny_llama, "--lora_weights", adapter, "--input_file", tmp_path / "q.jsonl",
                         "--output_file", read_only / "a.jsonl"],
            "format_cot": ["--src", tsv_dir(tmp_path, shared_dir), "--datasets", "creak", "--out", read_only / "c.json"],
            "data_stats": ["--data", data_file, "--base_model", tiny_llama, "--json", read_only / "s.json"],
            "export_hf_checkpoint": ["--base_model", tiny_llama, "--lora_weights", adapter, "--out", read_only / "m"],
            "evaluate": ["--predictions", tmp_path / "p.jsonl", "--out", read_only / "e"],
            "study": ["--base_model", tiny_llama, "--out", read_only / "s", "--alpaca", data_file, "--belle", data_file,
                      "--cot_src", shared_dir / "data" / "flan_cot"],
            "download_data": ["alpaca", "--out", read_only / "a.json"]}[name]
    one_line(*run_cli(script(name).main, args, monkeypatch, capsys), str(read_only), "cannot write in /sys")


# ---- tracebacks no more ----

def test_a_broken_catalogue_is_not_read_at_import(tmp_path, monkeypatch):
    import alpaca_cot

    (tmp_path / "catalog.json").write_text("{ broken")
    with monkeypatch.context() as m:
        m.setattr(alpaca_cot, "DATA_DIR", tmp_path)
        broken = importlib.reload(catalog)  # what importing generate.py (or any script) does
        with pytest.raises(UserError, match=rf"{tmp_path / 'catalog.json'}: cannot read the catalogue"):
            broken.resolve("alpaca")
    importlib.reload(catalog)
    assert "alpaca" in catalog.REGISTRY


@pytest.mark.parametrize("row, words", [
    ({"output": 5}, "field 'output' must be a string, got int"),
    ({"gold": None}, "field 'gold' must be a string, got NoneType"),
    ({"dataset": "nope"}, "field 'dataset' 'nope' is not a FLAN CoT dataset"),
    ({"task": "maths"}, "field 'task' must be one of cot, chinese, english"),
    ({"cot_trigger": "yes"}, "field 'cot_trigger' must be true or false"),
])
def test_evaluate_predictions_with_bad_fields_name_file_record_and_field(row, words, tmp_path, monkeypatch, capsys):
    good = {"task": "cot", "dataset": "creak", "instruction": "q", "output": "the answer is yes", "gold": "yes"}
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, **row}) + "\n")
    one_line(*run_cli(script("evaluate").main, ["--predictions", path], monkeypatch, capsys), f"{path}: line 2: {words}")
    path.write_text(json.dumps(good) + "\n")  # no row with the trigger: its column of the table stays empty
    assert run_cli(script("evaluate").main, ["--predictions", path], monkeypatch, capsys)[0] == 0


def test_format_cot_on_an_unreadable_tsv(shared_dir, tmp_path, monkeypatch, capsys):
    from alpaca_cot.data import cot

    src = tsv_dir(tmp_path, shared_dir)

    def unreadable(path, *args, **kwargs):  # chmod 000 does not stop root, who runs the tests here
        if str(path).endswith(".tsv"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(cot, "open", unreadable, raising=False)
    code, err = run_cli(script("format_cot").main, ["--src", src, "--datasets", "creak", "--out", tmp_path / "c.json"],
                        monkeypatch, capsys)
    one_line(code, err, f"{src / 'creak_train.tsv'}: cannot read it (Permission denied)")


def test_a_prompt_template_is_a_name_not_a_path(tiny_llama, data_file, monkeypatch, capsys):
    for name in ("../data/demo", "/etc/passwd", ".."):
        for fn, args in ((script("data_stats").main, ["--data", data_file, "--base_model", tiny_llama]),
                         (script("generate").main, ["--base_model", tiny_llama, "--no_adapter", "--instruction", "Hi"])):
            one_line(*run_cli(fn, [*args, "--prompt_template_name", name], monkeypatch, capsys),
                     f"--prompt_template_name {name!r}: a template is a name in", "not a path")


def test_a_pickled_adapter_is_refused(adapter, tmp_path, monkeypatch):
    from alpaca_cot.model import models

    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(adapter / "adapter_config.json", folder)
    (folder / "adapter_model.bin").write_bytes(b"\x80\x04a pickle that could run code")
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the base model was loaded"))
    for check in (adapters.check_adapter, adapters.read_weights):
        with pytest.raises(UserError, match=r"adapter_model.bin: a pickled adapter, which is not loaded"):
            check(folder)


# ---- nothing silent ----

def test_max_steps_zero_is_refused(tiny_llama, data_file, tmp_path, monkeypatch, capsys):
    from alpaca_cot.train.finetune import finetune

    for steps in ("0", "-2"):
        code, err = run_cli(finetune, ["--base_model", tiny_llama, "--data", data_file, "--output_dir", tmp_path / "o",
                                       "--max_steps", steps], monkeypatch, capsys)
        one_line(code, err, f"--max_steps must be -1 (train --num_epochs) or an integer >= 1, got {steps}")


def test_generate_input_file_renders_history_as_the_conversation_does(llama_tokenizer, tmp_path):
    from alpaca_cot.infer import answer
    from alpaca_cot.data import preprocess
    from alpaca_cot.infer.generation import with_cot

    prompter = preprocess.Prompter("alpaca")
    seen = []
    gen = SimpleNamespace(tokenizer=llama_tokenizer, prompter=prompter, check_fits=lambda *a, **k: None,
                          prompt=lambda i, inp="", cot=False: prompter.prompt(with_cot(i) if cot else i, inp),
                          generate=lambda prompts, **k: (seen.extend(prompts), ["ok"] * len(prompts))[1])
    history = [["What is 2 + 2?", "4."], ["And times 3?", "12."]]
    records = [{"instruction": "Minus 5?", "input": "", "history": history}, {"instruction": "Hi", "input": ""}]
    out = tmp_path / "answers.jsonl"
    answer.answer_file(gen, records, "q.jsonl", out, 2, True, {"max_new_tokens": 2})
    assert seen[0] == preprocess.prompt_ids(llama_tokenizer, prompter, history, with_cot("Minus 5?"))
    assert seen[1] == prompter.prompt(with_cot("Hi"))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["history"] == history and "history" not in rows[1]


def test_study_checks_its_inputs_before_writing_anything(tiny_llama, shared_dir, data_file, tmp_path, monkeypatch,
                                                         capsys):
    out = tmp_path / "study"
    empty = tmp_path / "no-tsvs"
    empty.mkdir()
    common = ["--out", out, "--alpaca", shared_dir / "data" / "alpaca_cleaned.sample.json",
              "--belle", shared_dir / "data" / "belle_cn.sample.json", "--records_per_source", "4",
              "--cot_eval_per_dataset", "1", "--chinese_eval", "2", "--english_eval", "2", "--belle_eval_records", "1"]
    for args, words in ((["--base_model", tmp_path / "missing-model", "--cot_src", shared_dir / "data" / "flan_cot"],
                         "base model"), (["--base_model", tiny_llama, "--cot_src", empty], "no FLAN CoT TSVs")):
        one_line(*run_cli(script("study").main, [*common, *args], monkeypatch, capsys), words)
        assert not out.exists()  # no config.json, no data


def test_generate_and_finetune_clear_what_killed_saves_left(tiny_llama, adapter, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "adapter"
    shutil.copytree(adapter, folder)
    dead = dead_pid()
    (folder / f".saving-{dead}-k1ll3d").mkdir()  # a finetune killed mid-save
    (folder / f".saving-{os.getpid()}-l1v3").mkdir()  # a save under way
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"instruction": "Hi"}\n')
    leftover = tmp_path / f".q.answers.jsonl.{dead}.tmp"  # a generate killed mid-write
    leftover.write_text("half")
    code, err = run_cli(script("generate").main, ["--base_model", tiny_llama, "--lora_weights", folder, "--input_file",
                                                  questions, "--max_new_tokens", "1"], monkeypatch, capsys)
    assert code == 0, err
    assert not leftover.exists() and (tmp_path / "q.answers.jsonl").is_file()
    assert sorted(p.name for p in folder.glob(".saving-*")) == [f".saving-{os.getpid()}-l1v3"]
    (folder / f".run.json.{dead}.tmp").write_text("half")
    from alpaca_cot.train import checkpoints

    checkpoints.claim(folder, {}, checkpoints.Plan())
    assert not list(folder.glob(".*"))  # finetune drops every staging folder of its own folder


# ---- the rest of the issue ----

def test_download_fails_fast_suggesting_offline_mode(tmp_path, monkeypatch, capsys):
    import datasets

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there, nor behind a proxy:
    for var in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("datasets' retries were waited for"))
    code, err = run_cli(script("download_data").main, ["alpaca", "--out", tmp_path / "a.json"], monkeypatch, capsys)
    one_line(code, err, "cannot reach the hub (http://127.0.0.1:9) for yahma/alpaca-cleaned", "HF_HUB_OFFLINE=1")
    assert list(tmp_path.iterdir()) == []


def test_the_demo_adapter_is_where_generate_looks(monkeypatch):
    from alpaca_cot.train.checkpoints import default_output_dir

    demo = script("demo")
    where = default_output_dir("demo", 7, "smollm2-135m")  # generate.py --base_model smollm2-135m --data demo
    assert where == "saved-demo-smollm2-135m"
    assert f"DEMO_ADAPTER := {where}\n" in (ROOT / "Makefile").read_text()
    command = demo.generate_command("smollm2-135m", where, where)
    assert command.split()[1:7] == ["generate.py", "--base_model", "smollm2-135m", "--data", "demo", "--instruction"]
    readme = (ROOT / "README.md").read_text()
    assert readme.split("```bash\n")[1].startswith("make demo ") and command.split(" ", 1)[1] in readme


# ---- the folder writer ----

def test_atomic_folder_swaps_in_a_complete_folder_and_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "export"
    with io.atomic_folder(out, provenance={"run": 1}) as tmp:
        assert tmp.name == f".export.saving-{os.getpid()}" and io.TEMP_FOLDER.fullmatch(tmp.name)
        (tmp / "weights").write_text("first")
    assert json.loads((out / io.MARKER).read_text()) == {"run": 1}
    with pytest.raises(RuntimeError), io.atomic_folder(out) as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("the build failed")
    assert (out / "weights").read_text() == "first" and sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    with io.atomic_folder(out) as tmp:
        (tmp / "weights").write_text("second")
    assert (out / "weights").read_text() == "second" and sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_atomic_folder_without_replace_keeps_the_folder_another_process_made_first(tmp_path):
    out = tmp_path / "cache"
    with io.atomic_folder(out, replace=False) as tmp:
        (tmp / "config.json").write_text("ours")
        out.mkdir()  # another process finished the same folder meanwhile
        (out / "config.json").write_text("theirs")
    assert (out / "config.json").read_text() == "theirs" and sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
    with io.atomic_folder(tmp_path / "new", replace=False) as tmp:
        (tmp / "config.json").write_text("ours")
    assert (tmp_path / "new" / "config.json").read_text() == "ours"


def test_staging_folders_are_named_for_the_sweep(tmp_path):
    staging = io.staging_folder(tmp_path)
    assert staging.parent == tmp_path and io.STAGING.fullmatch(staging.name)
    assert staging.name.startswith(f"{adapters.STAGING_PREFIX}{os.getpid()}-")
