"""Tests of the FLAN CoT formatting (alpaca_cot/data/cot.py, scripts/format_cot.py) on the real TSVs."""

import json
import random

import pytest

from alpaca_cot import DATA_DIR, ROOT

from alpaca_cot.data import cot
from alpaca_cot.cli import UserError
from conftest import run_python

SCRIPT = ROOT / "scripts" / "format_cot.py"
COUNTS = {"aqua": 2728, "creak": 6915, "ecqa": 7112, "gsm8k": 7473, "qasc": 1084,
          "sensemaking": 6070, "strategyqa": 2061}
ORACLE = ("aqua", "creak", "ecqa", "qasc", "sensemaking", "strategyqa")


@pytest.fixture
def tsv_dir(shared_dir):
    return shared_dir / "data" / "flan_cot"


@pytest.fixture(scope="module")
def templates():
    return cot.load_templates()


def script(*args, cwd=ROOT):
    return run_python(SCRIPT, *args, cwd=cwd, timeout=120)


@pytest.mark.parametrize("name", ORACLE)
def test_original_style_reproduces_alpaca_cot(shared_dir, tsv_dir, templates, name):
    oracle = json.loads((shared_dir / "data" / "alpaca_cot_formatted" / f"{name}_train.head100.json")
                        .read_text(encoding="utf-8"))
    rows = cot.read_tsv(tsv_dir / f"{name}_train.tsv", "original")
    assert len(oracle) == 100
    for i, record in enumerate(oracle):
        candidates = [cot.format_row(rows[i], t) for t in templates[name]]
        assert record in candidates, f"{name} record {i} matches no template"


@pytest.mark.parametrize("style", ["original", "clean"])
def test_script_formats_all_rows(tsv_dir, tmp_path, style):
    # Run from another cwd with a relative --out: it must land relative to that cwd.
    r = script("--src", tsv_dir, "--out", "out/cot.json", "--style", style,
               "--per_dataset_dir", "per", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "esnli" in warnings[0] and "qed" in warnings[0]
    merged = json.loads((tmp_path / "out" / "cot.json").read_text(encoding="utf-8"))
    assert len(merged) == sum(COUNTS.values()) == 33443
    assert all(set(rec) == {"instruction", "input", "output"} and rec["input"] == "" for rec in merged)
    for name, n in COUNTS.items():
        per = json.loads((tmp_path / "per" / f"{name}_train.json").read_text(encoding="utf-8"))
        assert len(per) == n, name
        assert f"{name:12s} {n:6d}" in r.stdout
    assert "33443" in r.stdout
    assert not list((tmp_path / "out").glob(".*tmp")), "temp file left behind"


def test_seed_decides_template_choice(tsv_dir, templates):
    rows = cot.read_tsv(tsv_dir / "creak_train.tsv")
    a = cot.format_dataset("creak", rows, templates, random.Random(1))
    b = cot.format_dataset("creak", rows, templates, random.Random(1))
    c = cot.format_dataset("creak", rows, templates, random.Random(2))
    assert a == b
    assert sum(x != y for x, y in zip(a, c)) > len(rows) // 2
    # every template gets used on a set this big
    used = {t for rec, row in zip(a, rows) for t in templates["creak"] if cot.format_row(row, t) == rec}
    assert len(used) == len(templates["creak"])


def test_script_seed_is_reproducible(tsv_dir, tmp_path):
    outs = []
    for i, seed in enumerate([7, 7, 8]):
        out = tmp_path / f"{i}.json"
        assert script("--src", tsv_dir, "--out", out, "--seed", seed, "--datasets", "qasc").returncode == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert outs[0] != outs[2]


def test_clean_style_text(tsv_dir, templates):
    clean = {n: cot.read_tsv(tsv_dir / f"{n}_train.tsv", "clean") for n in COUNTS}
    for name in ("creak", "sensemaking", "ecqa", "qasc"):
        assert "\\n" in (tsv_dir / f"{name}_train.tsv").read_text(encoding="utf-8")
        records = cot.format_dataset(name, clean[name], templates, random.Random(0))
        assert not any("\\n" in r["instruction"] or "\\n" in r["output"] for r in records), name
        assert all("\n" in q for q, _, _ in clean[name]), name  # option lists became real lines
    for name, rows in clean.items():
        assert len(rows) == COUNTS[name]
        for row in rows:
            assert all(f and f == f.strip() and "\t" not in f for f in row), (name, row)
    aqua = "\n".join(f for row in clean["aqua"] for f in row)
    assert "\\n" not in aqua
    assert "\\inline \\fn_jvn \\therefore 16(x-3)+87 = 17x" in aqua  # \t of \therefore not a TAB
    assert "\\ Speed = 800⁄8 = 100 km/hr" in aqua  # backslash-space kept
    # the 8 double-escaped \\n are over-escaped line breaks: one newline, no stray backslash
    assert aqua.count("gallons\nVolume of whole") == 8
    creak = [f for row in clean["creak"] for f in row]
    assert any("3\\14" in f for f in creak)
    assert any('"\\The wool' in f for f in creak)
    marlboro = '"Marlboro used iconic imagery to promote its brand."'
    assert any(q.startswith(marlboro) for q, _, _ in clean["creak"])
    # ...whereas the csv.reader parse ("original") drops the quotes, as Alpaca-CoT did
    original = cot.read_tsv(tsv_dir / "creak_train.tsv", "original")
    assert not any(marlboro in q for q, _, _ in original)
    assert any(q.startswith(marlboro[1:-1]) for q, _, _ in original)


def test_template_file_matches_flan(shared_dir):
    ours = json.loads((DATA_DIR / "flan_cot_templates.json").read_text(encoding="utf-8"))
    flan = json.loads((shared_dir / "data" / "flan_cot_templates.json").read_text(encoding="utf-8"))
    assert ours["datasets"] == flan
    assert list(ours["datasets"]) == list(flan) == list(cot.DATASETS)
    assert sum(len(v) for v in ours["datasets"].values()) == 100
    assert "Apache-2.0" in ours["description"]
    loaded = cot.load_templates()
    assert loaded["qed"][0] == tuple(flan["qed"][0])


def test_format_row_keeps_braces_in_values():
    rec = cot.format_row(("What is {x} in {}?", "{0}", "Because {answer}."),
                         ("Q: {question}", "{chain_of_thought} A: {answer}"))
    assert rec == {"instruction": "Q: What is {x} in {}?", "input": "",
                   "output": "Because {answer}. A: {0}"}


def test_read_tsv_errors(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("q\ta\tc\nq\ta\tc\textra\n", encoding="utf-8")
    for style in ("original", "clean"):
        with pytest.raises(UserError, match=r"bad.tsv: line 2: expected 3 .* got 4"):
            cot.read_tsv(bad, style)
    empty = tmp_path / "empty.tsv"
    empty.write_text("q\ta\tc\nq\t  \tc\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"empty.tsv: line 2: empty field answer"):
        cot.read_tsv(empty, "clean")
    assert cot.read_tsv(empty, "original")[1] == ("q", "  ", "c")


def test_script_bad_row_writes_nothing(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "aqua_train.tsv").write_text("q1\ta1\tc1\nq2\ta2\n", encoding="utf-8")
    out = tmp_path / "out.json"
    for existing in (False, True):
        if existing:
            out.write_text('["previous"]', encoding="utf-8")
        r = script("--src", src, "--out", out, "--datasets", "aqua", *(["--overwrite"] if existing else []))
        assert r.returncode != 0
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        assert "aqua_train.tsv" in lines[0] and "line 2" in lines[0] and "got 2" in lines[0]
        if existing:
            assert out.read_text(encoding="utf-8") == '["previous"]'
        else:
            assert not out.exists()
        # no temp file left beside --out
        assert {p.name for p in tmp_path.iterdir()} == {"src"} | ({"out.json"} if existing else set())


def test_script_rejects_bad_arguments(tsv_dir, tmp_path):
    out = tmp_path / "out.json"
    r = script("--src", tsv_dir, "--out", out, "--style", "fancy")
    assert r.returncode != 0 and "style" in r.stderr
    (tmp_path / "empty").mkdir()
    r = script("--src", tmp_path / "empty", "--out", out)
    assert r.returncode != 0 and "found" in r.stderr
    r = script("--src", tsv_dir, "--out", out, "--datasets", "nope")
    assert r.returncode != 0 and "nope" in r.stderr
    assert not out.exists()


def test_tsv_quirks_bom_empty_merged_rows_and_field_limit(tmp_path):
    bom = tmp_path / "bom.tsv"
    bom.write_bytes("\ufeffq1\ta1\tc1\n".encode("utf-8"))
    for style in ("original", "clean"):
        assert cot.read_tsv(bom, style) == [("q1", "a1", "c1")]
    empty = tmp_path / "nothing.tsv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(UserError, match=r"nothing.tsv: no rows"):
        cot.read_tsv(empty)
    quoted = tmp_path / "quote.tsv"  # an unbalanced quote: csv.reader joins lines 1 and 2 into one row
    quoted.write_text('"q1 says\ta1\nq2"\ta2\tc2\nq3\ta3\tc3\n', encoding="utf-8")
    warnings = []
    rows = cot.read_tsv(quoted, "original", warn=warnings.append)
    assert len(rows) == 2 and len(warnings) == 1 and "line(s) 2" in warnings[0] and "quote.tsv" in warnings[0]
    huge = tmp_path / "huge.tsv"
    huge.write_text('"' + "x" * 200_000 + '"\ta\tc\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"huge.tsv: field larger than field limit"):
        cot.read_tsv(huge, "original")
    binary = tmp_path / "latin1.tsv"
    binary.write_bytes("caf\xe9\ta\tc\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1.tsv: not UTF-8 text"):
        cot.read_tsv(binary, "clean")


def test_a_cut_off_download_is_one_line(tmp_path, monkeypatch):
    import http.client
    import urllib.request

    def cut_off(url, timeout):
        raise http.client.IncompleteRead(b"partial", 100)

    monkeypatch.setattr(urllib.request, "urlopen", cut_off)
    with pytest.raises(UserError, match=r"download of .*aqua_train.tsv failed \(IncompleteRead"):
        cot.download("aqua", tmp_path)
    assert not list(tmp_path.iterdir())
