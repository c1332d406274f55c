"""FLAN CoT answer extraction and the other scores (alpaca_cot/eval/scoring.py, evaluation.py, evaluate.py)."""

import json

import pytest

from alpaca_cot import ROOT

from alpaca_cot.data import cot

from alpaca_cot.eval import evaluation, reading, scoring
from conftest import one_error_line, run_python

DATASETS = ("aqua", "creak", "ecqa", "gsm8k", "qasc", "sensemaking", "strategyqa")
AQUA_Q = "A board is 93 inches long. How long is each of 3 parts?\nOptions:\n(A) 31 inches\n(B) 32 inches\n(C) 33 inches"
ECQA_Q = "Where is a good place to keep a city map?\nOptions:\n- city\n- city hall\n- glove box"


@pytest.mark.parametrize("dataset,question,output,expected", [
    ("aqua", AQUA_Q, "93 / 3 = 31. So the answer is (A).", "A"),
    ("aqua", AQUA_Q, "The answer: B", "B"),
    ("aqua", AQUA_Q, "Each part is 31 inches. The answer is 31 inches.", "A"),  # option text
    ("aqua", AQUA_Q, "I think (B) is right.", "B"),  # no phrase: the one letter mentioned
    ("aqua", AQUA_Q, "It could be (B) or maybe (C)", None),  # no phrase, two letters: no answer
    ("ecqa", ECQA_Q, "- city\n- city hall\n- glove box", None),  # listing the options is no answer
    ("creak", "", "Ice floats.\nThe final answer: yes.", "yes"),
    ("strategyqa", "", "No, it is not. Therefore, the answer is no.", "no"),
    ("sensemaking", "", "Sentence A is fine.\nThus, the answer is Sentence B.", "Sentence B"),
    ("ecqa", ECQA_Q, "Maps fit there. So, the answer is city hall.", "city hall"),  # the longest option wins
    ("ecqa", ECQA_Q, "The answer is glove box. A city hall has maps too.", "glove box"),
    ("gsm8k", "", "She pays $1,250.50 in total. The answer is $1,250.50.", "1250.5"),
    ("gsm8k", "", "3 pens x 4 = 12, 12 + 5 = 17", "17"),  # no phrase: the last number
    ("strategyqa", "", "Yes, it can. No one doubts it.", "yes"),  # "No one" is not the answer "no"
    ("gsm8k", "", "I don't know.", None),
    # The cases of the review (issue 19): statements answering yes/no questions,
    ("strategyqa", "Is Matt Damon afraid of parachuting?", "Matt Damon is not afraid of parachuting.", "no"),
    ("strategyqa", "Is University of Pittsburgh easier to enter than FBI?",
     "University of Pittsburgh is easier to enter than the FBI.", "yes"),
    ("creak", 'Is the following statement true?\n"E.T. did not make the top ten."', "E.T. did not make the top ten.",
     "yes"),  # restating a negated claim affirms it
    ("creak", 'Claim: "The Klingon Empire lost a war."\nIs the claim above correct?', "The claim is incorrect.", "no"),
    ("strategyqa", "Are aggressive bumblebees suicidal?", "Aggressive bumblebees can be very destructive.", None),
    # an off-list final answer is no answer, not an option the reasoning named,
    ("ecqa", ECQA_Q, "A city hall has maps. So, the answer is library.", None),
    ("aqua", AQUA_Q, "Each part is 31 inches. The answer is 35 inches.", None),
    # numbers of the working are not the answer, and "A" as an article is not option (A).
    ("aqua", AQUA_Q, "A board of 93 inches split in 3 is 31 inches each, so 32 inches is wrong and it is long.", None),
    ("aqua", AQUA_Q, "A board is cut. (B)", "B"),
    ("gsm8k", "", "He had 100 + 350 = 550 pencils at the end.", "550"),
    ("gsm8k", "", "It would consume 7.2 kilowatts if used for 6 hours a day for 5 days.", "7.2"),
    ("gsm8k", "", "1. First find the pens.\n2. Then find the total.", None),  # steps that reach no result
    ("gsm8k", "", "1. 7.2 kilowatts.\n2. 10 kilowatts.", None),  # alternatives
    ("gsm8k", "", "So, 1/4 of the oil would be needed.", None),  # a fraction of something is no number of litres
    ("sensemaking", 'Which one does not make sense?\nOptions:\n- Sentence A: "She went home to buy groceries"\n'
     '- Sentence B: "She went to the store tobuy groceries"', "She went to the store to buy groceries.", "Sentence B"),
    ("ecqa", "What do you need before you can dream?\nOptions:\n- set goals\n- got to sleep\n- fall asleep",
     "So, the answer is get to sleep.", "got to sleep"),  # a slip in a stated option
])
def test_extraction_rules(dataset, question, output, expected):
    assert reading.extract(output, dataset, question)[0] == expected


def test_a_cut_off_output_reads_no_number_and_no_unsettled_answer():
    looping = "20% of 20 = 4. 40% of 20 = 8. 16 = 20 * 20 = 40. 40 = 20 * 20 = 40. 40 = 20 * 20 ="
    assert reading.extract(looping, "gsm8k", "", finished=False) == (None, "cut_off")
    assert reading.extract(looping, "gsm8k", "", finished=True)[0] == "40"
    flip = "The answer is no. The statement is not true.\n\nThe answer is yes. The statement is true. The"
    assert reading.extract(flip, "creak", "", finished=False) == (None, "unsettled")
    assert reading.extract(flip, "creak", "", finished=True) == ("yes", "phrase")


def test_language_and_numbers():
    assert scoring.is_chinese("长城是中国古代的防御工程，全长2万多公里。")
    assert not scoring.is_chinese("The Great Wall is 21,000 km long. 长城")
    assert scoring.is_english("The Great Wall is long.") and not scoring.is_english("12345")
    assert scoring.final_number("一共有3+4=7个苹果，答案是7。") == "7"
    assert scoring.rouge_l("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    assert scoring.rouge_l("the cat sat on the mat", "dogs run") == 0.0


def wrong_answer(dataset, question, answer):
    """Another answer of the same form, rendered as FLAN writes it."""
    kind, right = reading.KINDS[dataset], reading.gold(answer, dataset, question)
    if kind == "letter":
        return next(f"({k})" for k in reading.options(question) if k != right)
    if kind == "option":
        return next(v for v in reading.options(question) if v != right)
    if kind == "yes_no":
        return "no" if right == "yes" else "yes"
    if kind == "sentence":
        return "Sentence B" if right == "Sentence A" else "Sentence A"
    return str(float(right) + 1)


@pytest.mark.parametrize("style", ["clean", "original"])
def test_every_real_row_gold_is_right_and_wrong_is_wrong(shared_dir, style):
    """Each row of the 7 TSVs, rendered with one of its dataset's FLAN targets: the gold answer is read back
    exactly, an answer of the same form but wrong never is."""
    templates = cot.load_templates()
    for dataset in DATASETS:
        rows = cot.read_tsv(shared_dir / "data" / "flan_cot" / f"{dataset}_train.tsv", style)
        for i, (question, answer, chain) in enumerate(rows):
            target = templates[dataset][i % len(templates[dataset])][1]
            right = reading.gold(answer, dataset, question)
            assert right is not None, (dataset, i)
            assert reading.extract(target.format(chain_of_thought=chain, answer=answer), dataset, question) == \
                (right, "phrase"), (dataset, i)
            wrong = target.format(chain_of_thought=chain, answer=wrong_answer(dataset, question, answer))
            assert reading.extract(wrong, dataset, question)[0] != right, (dataset, i)


@pytest.fixture(scope="module")
def held_out(shared_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cot")
    r = run_python(ROOT / "scripts" / "format_cot.py", "--src", shared_dir / "data" / "flan_cot",
                   "--out", out / "train.json", "--style", "clean", "--holdout", "20", "--seed", "3")
    assert r.returncode == 0, r.stderr
    return out


def test_holdout_keeps_eval_questions_out_of_training(held_out):
    train = json.loads((held_out / "train.json").read_text(encoding="utf-8"))
    items = [json.loads(line) for line in (held_out / "train_eval.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {i["dataset"] for i in items} == set(DATASETS) and len(items) == 140
    assert len(train) == 33443 - 140
    text = "\n".join(cot.question_key(r["instruction"]) for r in train)
    assert not [i for i in items if cot.question_key(i["instruction"]) in text]


def test_holdout_drops_repeats_of_an_eval_question():
    rows = {"creak": [("Is ice cold?", "yes", "a"), ("Is fire hot?", "yes", "b"), ("is  ICE cold?", "yes", "c")]}
    formatted = {"creak": [{"instruction": q, "input": "", "output": a} for q, a, _ in rows["creak"]]}
    for seed in range(20):
        train, items, repeats = cot.holdout(formatted, rows, 1, seed)
        if items[0]["instruction"] != "Is fire hot?":
            assert repeats == 1 and [r["instruction"] for r in train["creak"]] == ["Is fire hot?"]
            return
    pytest.fail("no seed held out the repeated question")


def predictions_file(held_out, path, wrong: bool):
    items = evaluation.load_items(held_out / "train_eval.jsonl", "cot")
    rows = []
    for item in evaluation.expand(items):
        answer = wrong_answer(item["dataset"], item["instruction"], item["gold"]) if wrong else item["gold"]
        rows.append(dict(item, prompt="", output=f"Some reasoning. So the answer is {answer}."))
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("wrong,expected", [(False, 1.0), (True, 0.0)])
def test_evaluate_rescores_predictions(held_out, tmp_path, wrong, expected):
    path = predictions_file(held_out, tmp_path / "p.jsonl", wrong)
    r = run_python(ROOT / "scripts" / "evaluate.py", "--predictions", path, "--out", tmp_path / "scored")
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "scored" / "summary.json").read_text())
    for key in ("no_trigger", "trigger"):
        assert summary["cot"][key]["accuracy"] == expected
        assert set(summary["cot"][key]["per_dataset"].values()) == {expected}
        assert summary["cot"][key]["n"] == 140


def test_evaluate_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task": "cot", "dataset": "gsm8k", "instruction": "q", "answer": "seven"}\n', encoding="utf-8")
    r = run_python(ROOT / "scripts" / "evaluate.py", "--base_model", "smollm2-135m", "--cot_eval", bad,
                   "--out", tmp_path / "o")
    assert one_error_line(r) == f"error: {bad}: line 1: field 'answer' 'seven' is not a number answer"
    assert not (tmp_path / "o").exists()


def test_a_prediction_row_without_its_dataset_is_one_line(tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"task": "cot", "instruction": "q", "output": "o", "gold": "yes"}\n', encoding="utf-8")
    r = run_python(ROOT / "scripts" / "evaluate.py", "--predictions", bad)
    assert one_error_line(r) == f"error: {bad}: line 1: not a prediction row (field 'dataset')"


def test_the_scorer_reads_what_its_readers_read():
    """study/scoring-validation: outputs of the two studies, each read by two independent readers, disagreements
    adjudicated; the scorer must agree with their reading on at least 97% of them, and on the batch drawn after
    it was frozen at least 95%."""
    from alpaca_cot.eval import validation

    folder = ROOT / "study" / "scoring-validation"
    sample, labels = (validation.read_rows(folder / name) for name in ("sample.jsonl", "labels.jsonl"))
    assert len(labels) == len(sample) >= 300 and {r["sample_id"] for r in sample} == {r["sample_id"] for r in labels}
    assert all(len(r["labellers"]) == 2 for r in labels)
    result = validation.agreement(sample, labels)
    assert set(result["batches"]) == {"dev", "test", "heldout", "all"}
    assert result["batches"]["all"]["scorer_share"] >= 0.97, result["disagreements"]
    assert result["batches"]["heldout"]["scorer_share"] >= 0.95, result["disagreements"]
