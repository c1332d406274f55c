"""The one text normaliser (alpaca_cot/text.py) and its options, as dedup, hold-outs and the scorer use them."""

import pytest

from alpaca_cot.text import normalise

from alpaca_cot.data import cot, dedup

TEXT = "  Ｗhat's\tthe\\nANSWER，“Sentence A”?! "


@pytest.mark.parametrize("options,expected", [
    ({}, "ｗhat's the\\nanswer，“sentence a”?!"),  # the scorer's: punctuation and Unicode forms as written
    ({"flan_newlines": True}, "ｗhat's the answer，“sentence a”?!"),  # hold-outs' question_key
    ({"flan_newlines": True, "punctuation": "space"}, "what s the answer sentence a"),  # dedup's key (NFKC)
    ({"punctuation": "drop"}, "hatsthenanswersentencea"),  # quoted sentences: ASCII letters and digits only
])
def test_each_option_keeps_what_its_caller_needs(options, expected):
    assert normalise(TEXT, **options) == expected


def test_the_callers_share_it():
    assert dedup.normalise(TEXT) == normalise(TEXT, flan_newlines=True, punctuation="space")
    assert cot.question_key(TEXT) == normalise(TEXT, flan_newlines=True)


def test_an_unknown_punctuation_option_is_refused():
    with pytest.raises(ValueError, match="punctuation must be one of keep, space, drop"):
        normalise("x", punctuation="strip")
