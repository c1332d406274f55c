"""The one text normaliser: lower case and white space collapsed, with options for the stricter keys.

Its callers need different strictness, so each names its option rather than keeping its own copy:
- the scorer (eval/reading.py) matches option texts inside an answer and keeps everything else, punctuation
  included: "(A)", "$1,250" and "don't" must still read as written;
- hold-outs (data/cot.py question_key) also read FLAN's literal backslash-n as a space, and keep punctuation,
  so the committed held-out draws stay as they were drawn;
- dedup and decontamination (data/dedup.py) fold Unicode compatibility forms (NFKC) and turn punctuation and
  symbols into spaces, so that a full-width comma or a different quote mark does not hide a duplicate;
- reading a quoted sentence (eval/reading.py) compares letters and digits only, spaces dropped too.
"""

import re
import unicodedata

PUNCTUATION = ("keep", "space", "drop")  # normalise's punctuation option


def normalise(text: str, *, flan_newlines: bool = False, punctuation: str = "keep") -> str:
    """text lower-cased, runs of white space one space, no space at either end.

    flan_newlines: FLAN's literal backslash-n (the two characters) read as a space first.
    punctuation: "keep" leaves it; "space" folds the text to NFKC first, then makes every punctuation and
    symbol character a space; "drop" keeps only the ASCII letters and digits, with no space between them."""
    if punctuation not in PUNCTUATION:
        raise ValueError(f"punctuation must be one of {', '.join(PUNCTUATION)}, got {punctuation!r}")
    if punctuation == "space":
        text = unicodedata.normalize("NFKC", text)
    if flan_newlines:
        text = text.replace("\\n", " ")
    text = text.lower()
    if punctuation == "drop":
        return re.sub(r"[^0-9a-z]", "", text)
    if punctuation == "space":
        text = "".join(c if unicodedata.category(c)[0] not in "PS" else " " for c in text)
    return " ".join(text.split())
