"""Prompt helpers: LLaVA's NaN rules, MMStar inline options, suffix handling."""

from __future__ import annotations

import math

from pdrop_eval.data.prompts import inline_options, is_none, leading_options, mcq_prompt, split_suffix
from pdrop_eval.data.rows import answer_list


def test_is_none_matches_llava():
    assert all(is_none(value) for value in (None, math.nan, "nan", "NaN", "None", "none"))
    assert not any(is_none(value) for value in ("", "NA", "0", 0, "no"))


def test_leading_options_stop_at_the_first_missing_one():
    assert leading_options({"A": "x", "B": math.nan, "C": "z"}) == {"A": "x"}
    assert leading_options({"A": "x", "B": "nan"}) == {"A": "x"}
    assert leading_options({}) == {}


def test_mcq_prompt_layout():
    assert mcq_prompt("Q?", "H", {"A": "a", "B": "b"}, "\nS") == "H\nQ?\nA. a\nB. b\nS"
    assert mcq_prompt("Q?", math.nan, {}, "\nS") == "Q?\nS"


def test_inline_options_keep_commas_inside_options():
    assert inline_options("Q\nOptions: A: 1, 2, B: 3, C: x, y, z") == {"A": "1, 2", "B": "3", "C": "x, y, z"}
    assert inline_options("no options here") == {}


def test_split_suffix_appends_when_absent():
    assert split_suffix("Q?\nS", "\nS") == ("Q?", "Q?\nS")
    assert split_suffix("Q?", "\nS") == ("Q?", "Q?\nS")


def test_answer_lists_use_literal_eval_never_eval():
    assert answer_list("[\"Denny's\", 'dennys']") == ["Denny's", "dennys"]
    assert answer_list("[1, 2.5]") == ["1", "2.5"]
    assert answer_list("14") == ["14"]
    assert answer_list("[__import__('os')]") == ["[__import__('os')]"]
    assert answer_list(("a", "b")) == ["a", "b"]
