"""Scoring answers: FLAN CoT answer extraction, language shares, final numbers, ROUGE-L.

Pure functions of text, with no model, so that `scripts/evaluate.py --predictions` can re-score
a file of outputs and anyone can audit a reported number.

FLAN CoT extraction. FLAN's targets end with an answer phrase ("So the answer is X.", "The final
answer: X.", "Therefore, the answer is X.", ...): every one is "answer is X" or "answer: X". The
answer is read from the text after the last such phrase, on its line, as the first answer of the
dataset's form found there:
- aqua, qasc: an option letter, "(B)", a bare "B", or the text of one of the question's options;
- creak, strategyqa: yes or no;
- sensemaking: "Sentence A" or "Sentence B";
- ecqa: one of the question's option strings (the longest that matches);
- gsm8k, and any other dataset: a number, compared as a number.
Fallback, when no phrase is found or nothing of that form follows it: for numbers, the last number
in the output (the usual GSM8K rule); for every other form, the one answer of that form that the
output mentions, and none if it mentions two different ones (a model that lists the options, or
says "yes ... no", has not answered). Gold answers are read by the same rules.
"""

import re

PHRASE = re.compile(r"\banswer\s*(?:is\b|:)", re.IGNORECASE)
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
KINDS = {"aqua": "letter", "qasc": "letter", "creak": "yes_no", "strategyqa": "yes_no",
         "sensemaking": "sentence", "ecqa": "option", "esnli": "option", "gsm8k": "number"}


def _lines(question: str) -> list[str]:
    return question.replace("\\n", "\n").split("\n")  # original-style files keep a literal backslash-n


def options(question: str) -> dict[str, str]:
    """The option list of a question: {"A": "31 inches", ...} for lettered options, else {text: text}."""
    found = {}
    for line in _lines(question):
        line = line.strip()
        lettered = re.match(r"^(?:-\s*)?\(([A-H])\)\s*(.+)$", line)
        if lettered:
            found[lettered.group(1)] = lettered.group(2).strip()
        elif line.startswith("- ") and line[2:].strip():
            found[line[2:].strip()] = line[2:].strip()
    return found


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _option_hits(text: str, question: str, kind: str) -> list[tuple[int, str]]:
    """(position, canonical answer) of every option text in text; overlapping hits keep the longest."""
    low = _norm(text)
    spans = []
    for key, value in options(question).items():
        if kind == "letter" and key == value:
            continue
        for m in re.finditer(r"(?<!\w)" + re.escape(_norm(value)) + r"(?!\w)", low):
            spans.append((m.start(), -len(m.group()), key))
    hits, covered = [], -1
    for start, negative_length, key in sorted(spans):
        if start > covered:
            hits.append((start, key))
            covered = start - negative_length - 1
    return hits


def find_answers(text: str, kind: str, question: str = "") -> list[tuple[int, str]]:
    """Every answer of the given form in text, as (position, canonical form), in order.
    Positions of option-text hits are in whitespace-folded lowercase text; they only order hits."""
    if kind == "letter":
        hits = [(m.start(), m.group(1)) for m in re.finditer(r"\(([A-H])\)", text)]
        bare = re.match(r"^\s*([A-H])(?=[).,:]|\s|$)", text)
        if bare:
            hits.append((bare.start(1), bare.group(1)))
        return sorted(hits + _option_hits(text, question, kind))
    if kind == "yes_no":
        return [(m.start(), m.group(1).lower()) for m in re.finditer(r"\b(yes|no)\b", text, re.IGNORECASE)]
    if kind == "sentence":
        return [(m.start(), f"Sentence {m.group(1).upper()}")
                for m in re.finditer(r"\bsentence\s*([ab])\b", text, re.IGNORECASE)]
    if kind == "option":
        return _option_hits(text, question, kind)
    return [(m.start(), _number(m.group())) for m in NUMBER.finditer(text.replace("$", ""))]


def _number(text: str) -> str:
    value = float(text.replace(",", ""))
    return str(int(value)) if value.is_integer() else repr(value)


def extract(output: str, dataset: str, question: str = "") -> tuple[str | None, str]:
    """The answer a model gave and how it was found: ("B", "phrase"), ("B", "fallback"), (None, "ambiguous")
    or (None, "none")."""
    kind = KINDS.get(dataset, "number")
    phrases = list(PHRASE.finditer(output))
    if phrases:
        tail = output[phrases[-1].end():].split("\n", 1)[0]
        hits = find_answers(tail, kind, question)
        if hits:
            return hits[0][1], "phrase"
    hits = find_answers(output, kind, question)
    if not hits:
        return None, "none"
    if kind != "number" and len({answer for _, answer in hits}) > 1:
        return None, "ambiguous"
    return hits[-1][1], "fallback"


def gold(answer: str, dataset: str, question: str = "") -> str | None:
    hits = find_answers(answer, KINDS.get(dataset, "number"), question)
    return hits[0][1] if hits else None


def _letters(text: str) -> list[str]:
    return [c for c in text if c.isalpha()]


def is_chinese(text: str) -> bool:
    """At least half the letters are CJK ideographs (digits and punctuation don't count)."""
    letters = _letters(text)
    cjk = sum("\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf" for c in letters)
    return bool(letters) and cjk / len(letters) >= 0.5


def is_english(text: str) -> bool:
    """At least half the letters are ASCII letters."""
    letters = _letters(text)
    return bool(letters) and sum(c.isascii() for c in letters) / len(letters) >= 0.5


def final_number(text: str) -> str | None:
    found = NUMBER.findall(text.replace("$", ""))
    return _number(found[-1]) if found else None


_rouge = None


def rouge_l(reference: str, prediction: str) -> float:
    """ROUGE-L F1 with Porter stemming (Google's rouge-score; it scores English tokens only)."""
    global _rouge
    if _rouge is None:
        from rouge_score import rouge_scorer

        _rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return _rouge.score(reference, prediction)["rougeL"].fmeasure
