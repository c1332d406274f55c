"""Reading the answer of a FLAN CoT output as a person marking a test would.

`extract(output, dataset, question, finished)` returns the answer an output gives, in the dataset's form,
and how it was read. The rules follow study/scoring-validation/GUIDE.md, the guide its readers labelled a
sample of real outputs by; tests/test_scoring.py checks agreement with those labels.

1. A stated answer counts: the text after the last "answer is" / "answer:" on its line (or the next line
   when the phrase ends its own). If that text names no option of the question, the output gave an
   answer that is not on the list: it is read as no answer ("off_list"), never as an option found
   elsewhere. A cut-off output whose phrases state different answers has not settled ("unsettled").
2. Without a stated answer:
   - option letters (aqua, qasc): "(B)" anywhere, or a bare letter that is the whole first word
     ("B.", not the article in "A psychic"); option texts only in the last sentence;
   - ecqa: the option texts the output names;
   - sensemaking: "Sentence A/B", or the quoted text of one of the two sentences;
   - yes/no: a "Yes,"/"No." that begins or ends a sentence ("No one doubts it" is not "no"), else the
     first statement read against the question: a verdict on the claim ("The claim is incorrect") or a
     restatement of it, negated ("X is not afraid of parachuting": no) or not (yes);
   - numbers (gsm8k and any other dataset): the result of the last sentence that has a number (the
     number after its last "=", else its first number, list numbering and "20% of" operands skipped),
     and nothing when the output was cut off before it finished.
   Two different answers, and none settled, read as "ambiguous".
Gold answers are read by `gold`, the same forms without the fallbacks.
"""

import difflib
import functools
import re

from alpaca_cot.text import normalise

PHRASE = re.compile(r"\banswer\s*(?:is\b|:)", re.IGNORECASE)
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
KINDS = {"aqua": "letter", "qasc": "letter", "creak": "yes_no", "strategyqa": "yes_no",
         "sensemaking": "sentence", "ecqa": "option", "esnli": "option", "gsm8k": "number"}
OFF_LIST = "off_list"
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"“(\-\d])")
LIST_MARKER = re.compile(r"^\s*(?:[-*•]|#+|\d+[.)](?!\d))\s*")
NEGATION = re.compile(r"\b(?:not|never|cannot|no|none|nobody|nothing|neither|nor)\b|n't\b", re.IGNORECASE)
TRUE_WORDS = r"true|correct|accurate|right|valid|verifiable|factual|a verifiable fact|factually correct|possible"
FALSE_WORDS = r"false|incorrect|inaccurate|untrue|wrong|invalid|nonsensical|impossible|unverifiable"
VERDICT = re.compile(rf"(?<!if )(?<!whether )\b(?:the claim|the statement|the sentence|this|it)\b(?: above)?[^.?!]*?"
                     rf"\b(?:is|was|are|seems)\s+(not\s+)?(?:a\s+)?(?:(?P<t>{TRUE_WORDS})|(?P<f>{FALSE_WORDS}))\b"
                     r"|(?P<sense>does not make sense|doesn't make sense|makes no sense|makes sense)", re.IGNORECASE)
STOPWORDS = set("the and for are was were is be been being that this with from have has had does did do can could "
                "would should will its it's their there they them than then into onto over also just more most very "
                "which what who whom whose when where why how above following sentence claim statement true "
                "correct options yes".split())


def _pieces(text: str) -> list[tuple[str, bool]]:
    """(sentence, whether its line is a list item) for every sentence of text, list markers stripped."""
    out = []
    for line in text.split("\n"):
        marker = LIST_MARKER.match(line)
        for piece in SENTENCE_END.split(line[marker.end():] if marker else line):
            if any(c.isalnum() for c in piece):
                out.append((piece.strip(), bool(marker)))
    return out


def sentences(text: str) -> list[str]:
    """The text's sentences, list markers ("- ", "1. ", "#### ") stripped, empty ones dropped."""
    return [piece for piece, _ in _pieces(text)]


def _lines(question: str) -> list[str]:
    return question.replace("\\n", "\n").split("\n")  # original-style files keep a literal backslash-n


def options(question: str) -> dict[str, str]:
    """The option list of a question: {"A": "31 inches"} for lettered options, {"Sentence A": its text} for
    sensemaking, else {text: text}."""
    found = {}
    for line in _lines(question):
        line = line.strip()
        lettered = re.match(r"^(?:-\s*)?\(([A-H])\)\s*(.+)$", line)
        sentence = re.match(r"^-\s*(Sentence [AB])\s*:\s*(.+)$", line)
        if lettered:
            found[lettered.group(1)] = lettered.group(2).strip()
        elif sentence:
            found[sentence.group(1)] = sentence.group(2).strip().strip('"“”')
        elif line.startswith("- ") and line[2:].strip():
            found[line[2:].strip()] = line[2:].strip()
    return found


@functools.lru_cache(maxsize=65536)
def _pattern(option: str) -> re.Pattern:
    """An option's text as a whole-word pattern (compiled once: a study reads tens of thousands of outputs)."""
    return re.compile(r"(?<!\w)" + re.escape(option) + r"(?!\w)")


def _option_hits(text: str, question: str, keyed: bool) -> list[tuple[int, str]]:
    """(position, option) of every option text in text; overlapping hits keep the longest. keyed: only the
    options whose key differs from their text (letters, sentences)."""
    low = normalise(text)
    spans = []
    for key, value in options(question).items():
        if keyed == (key == value):
            continue
        for m in _pattern(normalise(value)).finditer(low):
            spans.append((m.start(), -len(m.group()), key))
    hits, covered = [], -1
    for start, negative_length, key in sorted(spans):
        if start > covered:
            hits.append((start, key))
            covered = start - negative_length - 1
    return hits


def _letters(text: str) -> list[tuple[int, str]]:
    hits = [(m.start(), m.group(1)) for m in re.finditer(r"\(([A-H])\)", text)]
    bare = re.match(r"^\s*(?:[Oo]ption\s+)?([A-H])(?=[).,:]|\s*$|\s*\n)", text)
    return sorted(hits + ([(bare.start(1), bare.group(1))] if bare else []))


def _sentence_labels(text: str) -> list[tuple[int, str]]:
    return [(m.start(), f"Sentence {m.group(1).upper()}") for m in re.finditer(r"\bsentence\s*([ab])\b", text, re.I)]


def _quoted_sentence(text: str, question: str) -> list[str]:
    """The sensemaking sentences whose text the output quotes (compared without spaces and punctuation)."""
    squash = lambda s: normalise(s, punctuation="drop")
    out = squash(text)
    return [key for key, value in options(question).items() if key.startswith("Sentence") and squash(value)
            and squash(value) in out]


def _fuzzy_option(text: str, question: str) -> str | None:
    """The one option a short answer names with a slip ("get to sleep" for "got to sleep")."""
    said = re.sub(r"^(?:a|an|the)\s+", "", normalise(re.split(r"[.!?\n]", text, maxsplit=1)[0])).strip(" .,:;\"'")
    close = [k for k, v in options(question).items() if difflib.SequenceMatcher(None, said, normalise(v)).ratio() >= 0.85]
    return close[0] if len(close) == 1 else None


def as_number(text: str) -> str:
    value = float(text.replace(",", ""))
    return str(int(value)) if value.is_integer() else repr(value)


def _result_number(sentence: str) -> str | None:
    """The result a sentence states: after its last "=", else its first number that is not an operand."""
    text = sentence.replace("$", "")
    if "=" in text:
        m = NUMBER.search(text.rsplit("=", 1)[1])
        if m:
            return as_number(m.group())
    for m in NUMBER.finditer(text):
        fraction = re.match(r"\s*/\s*\d", text[m.end():]) or re.search(r"\d\s*/\s*$", text[:m.start()])
        if not fraction and not re.match(r"\s*%\s*of\b", text[m.end():]):
            return as_number(m.group())
    return None


def _words(text: str) -> set[str]:
    return {w.rstrip("s") for w in re.findall(r"[a-z0-9']+", text.lower()) if len(w) >= 3 and w not in STOPWORDS}


def _claim(question: str) -> str:
    quoted = re.findall(r"[\"“]([^\"”]+)[\"”]", question)
    return quoted[0] if quoted else _lines(question)[0]


def _yes_no_words(text: str) -> list[tuple[int, str]]:
    """"Yes"/"No" as an answer: beginning a sentence or line and followed by punctuation or its end, or ending one."""
    hits = []
    for m in re.finditer(r"\b(yes|no)\b", text, re.IGNORECASE):
        before, after = text[:m.start()], text[m.end():]
        starts = re.search(r"(?:^|[\n.!?:;\"“(])\s*(?:-\s*)?\**\s*$", before)
        punctuated = re.match(r"\s*(?:[,.!;:)\"”*]|$|\n)", after)
        ends = re.match(r"\s*[.!]?\s*(?:\n|$)", after)
        if (starts and punctuated) or ends:
            hits.append((m.start(), m.group(1).lower()))
    return hits


def _statement(text: str, question: str) -> str | None:
    """yes/no from the first statement of text: a verdict on the claim, or the claim restated (or negated)."""
    claim = _claim(question)
    for sentence in sentences(text):
        if sentence.endswith("?"):
            continue
        verdict = VERDICT.search(sentence)
        if verdict:
            positive = bool(verdict.group("t")) or verdict.group("sense") == "makes sense"
            return "yes" if positive != bool(verdict.group(1)) else "no"
        wanted, said = _words(claim), _words(sentence)
        last = _words(claim.rsplit(None, 1)[-1]) if claim.split() else set()
        share = len(said & wanted) / len(wanted) if wanted else 0
        if share >= 0.8 or (share >= 0.5 and last <= said):  # about the claim, its last word (the predicate) too
            same = len(NEGATION.findall(sentence)) % 2 == len(NEGATION.findall(claim)) % 2
            return "yes" if same else "no"
        return None
    return None


def _stated(tail: str, kind: str, question: str) -> str | None:
    """The answer stated after an answer phrase; OFF_LIST for a stated answer that is no option; None when
    nothing is stated there (or, for yes/no, nothing that reads as yes or no)."""
    if not any(c.isalnum() for c in tail):
        return None
    if kind == "yes_no":
        words = _yes_no_words(tail) or [(m.start(), m.group(1).lower()) for m in re.finditer(r"^\W*(yes|no)\b", tail, re.I)]
        if words:
            return words[0][1]
        verdict = re.match(rf"^\W*(?:(?P<t>{TRUE_WORDS})|(?P<f>{FALSE_WORDS}))\b", tail, re.IGNORECASE)
        return ("yes" if verdict.group("t") else "no") if verdict else _statement(tail, question)
    if kind == "number":
        found = _result_number(tail)
        return found if found is not None else OFF_LIST
    if kind == "letter":
        hits = sorted(_letters(tail) + _option_hits(tail, question, keyed=True))
    elif kind == "sentence":
        hits = _sentence_labels(tail) or [(0, k) for k in _quoted_sentence(tail, question)]
    else:
        hits = _option_hits(tail, question, keyed=False)
    if hits:
        return hits[0][1]
    return _fuzzy_option(tail, question) or OFF_LIST


def _names_result(sentence: str, option: str) -> bool:
    """An option's text in the last sentence names the answer; a number only where the sentence ends on it
    ("... its area is 1000."), not one met on the way ("... from 10 a.m. to 11 a.m.")."""
    if not NUMBER.fullmatch(option.replace("$", "").rstrip(" .%")):
        return True
    return normalise(sentence).rstrip(" .!\"'").endswith(normalise(option).rstrip(" .!\"'"))


def _last_statement(output: str) -> str | None:
    """The output's last sentence, unless it is an item of a list of several (a list names options, it does not
    choose one)."""
    pieces = _pieces(output)
    if not pieces or (pieces[-1][1] and sum(listed for _, listed in pieces) > 1):
        return None
    return pieces[-1][0]


def _phrase_tail(output: str, end: int) -> str:
    line, _, rest = output[end:].partition("\n")
    if any(c.isalnum() for c in line):
        return line
    return next((l for l in rest.split("\n") if any(c.isalnum() for c in l)), "")


def _unprompted(output: str, kind: str, question: str, finished: bool) -> tuple[str | None, str]:
    """The answer of an output without a stated one (rule 2 of the module docstring)."""
    if kind == "number":
        if not finished:
            return None, "cut_off"
        numbered = [s for s in sentences(output) if NUMBER.search(s.replace("$", ""))]
        if not numbered:
            return None, "none"
        quantities = [s for s in numbered if re.fullmatch(r"\$?[\d.,]+\s*[a-z]*\.?", s.strip(), re.I)]
        if len(quantities) > 1 and len({_result_number(s) for s in quantities}) > 1:
            return None, "ambiguous"  # a list of bare quantities: alternatives, not a result
        found = _result_number(numbered[-1])
        return (found, "fallback") if found is not None else (None, "none")
    if kind == "yes_no":
        hits = _yes_no_words(output)
        if not hits:
            said = _statement(output, question)
            return (said, "statement") if said else (None, "none")
    elif kind == "letter":
        last = _last_statement(output) if finished else None
        named = [h for h in _option_hits(last, question, keyed=True) if _names_result(last, options(question)[h[1]])] \
            if last else []
        hits = _letters(output) + named
    elif kind == "sentence":
        hits = _sentence_labels(output) or [(0, k) for k in _quoted_sentence(output, question)]
    else:
        if len({piece.lower() for piece, item in _pieces(output) if item}) > 1:
            return None, "ambiguous"  # a list of several things names options, it does not choose one
        hits = _option_hits(output, question, keyed=False)
    answers = {answer for _, answer in hits}
    if not answers:
        return None, "none"
    return (answers.pop(), "fallback") if len(answers) == 1 else (None, "ambiguous")


def extract(output: str, dataset: str, question: str = "", finished: bool = True) -> tuple[str | None, str]:
    """The answer an output gives and how it was read: ("B", "phrase"), ("yes", "statement"), ("17", "fallback"),
    or None with "off_list", "unsettled", "ambiguous", "cut_off" or "none". finished: the output ended by
    itself (EOS or the template's stop), not at the token limit."""
    kind = KINDS.get(dataset, "number")
    stated = [_stated(_phrase_tail(output, m.end()), kind, question) for m in PHRASE.finditer(output)]
    stated = [s for s in stated if s is not None]
    if stated:
        if not finished and len(set(stated)) > 1:
            return None, "unsettled"
        return (None, "off_list") if stated[-1] == OFF_LIST else (stated[-1], "phrase")
    return _unprompted(output, kind, question, finished)


def gold(answer: str, dataset: str, question: str = "") -> str | None:
    """A gold answer (or a person's reading) in the canonical form extract returns."""
    kind = KINDS.get(dataset, "number")
    if kind == "letter":
        hits = sorted(_letters(answer) + _option_hits(answer, question, keyed=True))
    elif kind == "yes_no":
        hits = [(m.start(), m.group(1).lower()) for m in re.finditer(r"\b(yes|no)\b", answer, re.IGNORECASE)]
    elif kind == "sentence":
        hits = _sentence_labels(answer)
    elif kind == "option":
        hits = _option_hits(answer, question, keyed=False)
    else:
        hits = [(m.start(), as_number(m.group())) for m in NUMBER.finditer(answer.replace("$", ""))]
    return hits[0][1] if hits else None
