"""Scores of answers other than FLAN CoT accuracy: language shares, final numbers, ROUGE-L.

Pure functions of text, with no model, so that `scripts/evaluate.py --predictions` can re-score
a file of outputs and anyone can audit a reported number. How a FLAN CoT answer is read is
alpaca_cot/eval/reading.py's.
"""

from alpaca_cot.eval.reading import NUMBER, as_number


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
    return as_number(found[-1]) if found else None


_rouge = None


def rouge_l(reference: str, prediction: str) -> float:
    """ROUGE-L F1 with Porter stemming (Google's rouge-score; it scores English tokens only)."""
    global _rouge
    if _rouge is None:
        from rouge_score import rouge_scorer

        _rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return _rouge.score(reference, prediction)["rougeL"].fmeasure
