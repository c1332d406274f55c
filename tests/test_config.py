"""The typed configuration (alpaca_cot/config.py, train/config.py, infer/config.py): finetune's and generate's flags
as dataclasses whose fields carry default, help, range rule and whether they define the run; `--config run.yaml`
under the flags of every script, each bad key or value one line before any work."""

import dataclasses
import inspect
import json
import os

import pytest

from alpaca_cot import config
from alpaca_cot.cli import UserError
from alpaca_cot.infer.config import GenerateConfig
from alpaca_cot.train.config import FinetuneConfig
from conftest import ROOT, one_error_line, run_python

NO_TORCH = ROOT / "tests" / "no_torch"


def no_torch_env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(NO_TORCH), os.environ.get("PYTHONPATH")])))


@pytest.mark.parametrize("config_class", [FinetuneConfig, GenerateConfig])
def test_every_field_has_help_and_its_rule_holds_for_its_default(config_class):
    for f in dataclasses.fields(config_class):
        assert f.metadata["help"].strip(), f.name
        rule = f.metadata["rule"]
        assert rule is None or f.default is None or rule.test(f.default), f.name
    config.check(config_class())  # the defaults pass


def test_finetune_takes_its_flags_from_the_config():
    from alpaca_cot.train.finetune import finetune

    assert list(inspect.signature(finetune).parameters) == [f.name for f in dataclasses.fields(FinetuneConfig)]
    with pytest.raises(TypeError, match="lora_rr"):
        finetune(lora_rr=4)


def test_generate_takes_its_flags_from_the_config(monkeypatch, capsys):
    """generate.py's flags are GenerateConfig's fields; an instruction stays the text it was written as, and a
    decoding flag out of range is one line before anything loads."""
    from alpaca_cot import cli
    from alpaca_cot.infer.config import GenerateConfig
    from conftest import load_script, run_cli

    main = load_script("generate.py").main
    assert list(inspect.signature(main).parameters) == [f.name for f in dataclasses.fields(GenerateConfig)]
    shape = config.entry(GenerateConfig)
    assert cli.parse_argv(shape, ["--instruction", "None", "--input", "red, green"]) == \
        {"instruction": "None", "input": "red, green"}
    assert cli.parse_argv(shape, ["--top_k", "5"]) == {"top_k": 5}
    code, err = run_cli(main, ["--base_model", "unused", "--top_p", "1.5"], monkeypatch, capsys)
    assert (code, err.strip()) == (2, "error: --top_p must be in (0, 1], got 1.5")


def test_a_rule_names_flag_rule_and_value():
    with pytest.raises(UserError, match=r"^--lora_dropout must be in \[0, 1\), got 1\.5$"):
        config.check(FinetuneConfig(lora_dropout=1.5))
    with pytest.raises(UserError, match=r"^--max_steps must be -1 \(train --num_epochs\) or an integer >= 1, got 0$"):
        config.check(FinetuneConfig(max_steps=0))
    config.check(FinetuneConfig(micro_batch_size=None, save_total_limit=None))  # None: decided later, or "all"


def test_what_defines_a_run_comes_from_the_fields():
    record = config.run_defining(FinetuneConfig())
    assert {"lora_r", "learning_rate", "seed", "prompt_template", "base_model"} <= set(record)
    assert not {"output_dir", "logging_steps", "save_steps", "max_steps", "overwrite", "report_to"} & set(record)
    assert "prompt_template_name" not in record  # recorded under its earlier name, as run.json has it
    # Fields added after runs were recorded define a run only when set, so earlier records still match.
    assert not {"use_dora", "method", "fsdp", "balance_ranks"} & set(record)
    changed = config.run_defining(FinetuneConfig(use_dora=True, balance_ranks=False))
    assert changed["use_dora"] is True and changed["balance_ranks"] is False


def test_a_config_file_gives_flags_and_the_command_line_overrides_it(tmp_path):
    """finetune.py --config: the file's bad value is refused by its rule; a flag on the command line wins over
    it, and the run goes on to the next check (a missing data file), still before any model loads."""
    run = tmp_path / "run.yaml"
    run.write_text("lora_dropout: 1.5\nlora_target_modules: [q_proj, v_proj]\nquantization: none\n", encoding="utf-8")
    out = tmp_path / "out"
    proc = run_python(ROOT / "finetune.py", "--config", run, "--output_dir", out, cwd=tmp_path)
    assert one_error_line(proc) == "error: --lora_dropout must be in [0, 1), got 1.5"
    missing = tmp_path / "missing.json"
    proc = run_python(ROOT / "finetune.py", "--config", run, "--lora_dropout", "0.1", "--data", missing,
                      "--output_dir", out, cwd=tmp_path)
    assert "missing.json" in one_error_line(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]


@pytest.mark.parametrize("text, message", [
    ("lora_rr: 4\n", "unknown key 'lora_rr'; did you mean lora_r?"),
    ("lora_r: two\n", "lora_r takes an integer, got 'two'"),
    ("packing: 1\n", "packing takes True or False, got 1"),
    ("- lora_r\n", "expected a mapping of flag names to values, got list"),
    ("lora_r: [\n", "not valid YAML"),
])
def test_bad_config_files_are_one_line(tmp_path, text, message):
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    proc = run_python(ROOT / "finetune.py", "--config", path, "--output_dir", tmp_path / "out", cwd=tmp_path,
                      env=no_torch_env())
    line = one_error_line(proc)
    assert line.startswith(f"error: --config {path}: ") and message in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]


@pytest.mark.parametrize("script, key", [("generate.py", "instruction"), ("scripts/evaluate.py", "batch_size"),
                                         ("scripts/study.py", "seeds")])
def test_every_script_reads_a_config_file_before_torch(tmp_path, script, key):
    """generate, evaluate and study take --config as finetune does: checked before torch is imported (the
    blocker makes `import torch` fail), a JSON file as well as YAML."""
    path = tmp_path / "run.json"
    path.write_text(json.dumps({key + "x": 1}), encoding="utf-8")
    proc = run_python(ROOT / script, "--config", path, cwd=tmp_path, env=no_torch_env())
    assert one_error_line(proc) == f"error: --config {path}: unknown key '{key}x'; did you mean {key}?"


def test_config_file_values_are_typed_as_flags_are(tmp_path):
    from alpaca_cot.cli import _shape

    shape = _shape("alpaca_cot.train.finetune:finetune", "alpaca_cot.train.config:FinetuneConfig")
    path = tmp_path / "run.yaml"
    path.write_text("output_dir: 2024\nlora_target_modules: [q_proj, v_proj]\nnum_epochs: 2\nbase_model: null\n",
                    encoding="utf-8")
    got = config.read_config_file(path, shape)
    assert got == {"output_dir": "2024", "lora_target_modules": ("q_proj", "v_proj"), "num_epochs": 2,
                   "base_model": None}


def test_help_lists_the_config_flag():
    proc = run_python(ROOT / "finetune.py", "--help")
    assert proc.returncode == 0 and "  --config=None " in proc.stdout and "  --lora_r=8 " in proc.stdout
