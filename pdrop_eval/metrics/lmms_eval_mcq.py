"""lmms-eval 0.7.3's rule for reading an option letter (`lmms_eval/tasks/_task_utils/mcq_extract.py`,
`extract_mcq_answer`), which its MMStar task (`tasks/mmstar/utils.py` `exact_match`) uses with choices A-D.

Kept apart from VLMEvalKit's matcher (`choice.py`): it is a different rule, used only for the labelled
`lmms_eval/...` columns. Every place a letter could sit is a candidate, ranked by how the letter is written
(alone at the start > alone at the end > after an answer phrase > "(B)" > "B." > "B:" > "B)" > "B "), the later
one winning within a rank; a bare occurrence anywhere counts only when nothing else does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

MMSTAR_CHOICES = ("A", "B", "C", "D")

# Stripped from both ends, one character kind after the other, in this order (so '"B."' keeps its period).
_EDGE_MARKS = (",", ".", "!", "?", ";", ":", "'", '"')

# Searched in the lowercased text; the letter may be anywhere after the phrase, even inside a word.
_ANSWER_PHRASES = (
    "the answer is", "answer is", "the correct answer is", "correct answer is", "the best answer is",
    "best answer is", "the correct option is", "correct option is", "the best option is", "best option is",
    "the choice is", "choice is", "the correct choice is", "correct choice is", "i choose", "i select", "i pick",
    "my answer is", "my choice is", "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选", "答えは",
)  # fmt: skip

# (suffix template, rank): "({})" is "(B)" and so on; the letter's position is where the pattern starts.
_WRITTEN_FORMS = (("({})", 6), ("{}.", 5), ("{}:", 4), ("{})", 3), ("{} ", 2))
_RANK_START, _RANK_END, _RANK_PHRASE, _RANK_ANYWHERE = 10, 9, 7, 0


class _Candidate(NamedTuple):
    rank: int
    position: int
    letter: str


def extract_mcq_letter(response: str, choices: Sequence[str] = MMSTAR_CHOICES) -> str:
    """The letter lmms-eval reads from `response`, or "" when there is none."""
    if not response.strip():
        return ""
    core = response.strip()
    for mark in _EDGE_MARKS:
        core = core.strip(mark)
    padded = f" {core} "
    candidates = [
        _Candidate(rank, padded.rfind(form.format(letter)), letter)
        for form, rank in _WRITTEN_FORMS
        for letter in choices
        if form.format(letter) in padded
    ]
    lowered = padded.lower()
    for phrase in _ANSWER_PHRASES:
        start = lowered.find(phrase)
        if start == -1:
            continue
        # Upstream indexes the ORIGINAL text with an offset found in the lowercased one; kept as is.
        after = start + len(phrase)
        candidates += [
            _Candidate(_RANK_PHRASE, padded.find(letter, after), letter)
            for letter in choices
            if padded.find(letter, after) != -1
        ]
    alone = padded.strip()
    for letter in choices:
        if alone.startswith(letter) and (len(alone) == 1 or not alone[1].isalpha()):
            candidates.append(_Candidate(_RANK_START, 0, letter))
        if alone.endswith(letter) and (len(alone) == 1 or not alone[-2].isalpha()):
            candidates.append(_Candidate(_RANK_END, len(padded) - 1, letter))
    if not candidates:
        candidates = [
            _Candidate(_RANK_ANYWHERE, padded.rfind(letter), letter) for letter in choices if letter in padded
        ]
    # A (rank, position) pair names one character, so it never ties between two different letters.
    return max(candidates).letter if candidates else ""


def mmstar_letter_hit(prediction: str, gold: str) -> float:
    """lmms-eval `mmstar/utils.py` `exact_match`: 1.0 when the extracted letter is the stripped, uppercased gold."""
    return 1.0 if extract_mcq_letter(prediction) == gold.strip().upper() else 0.0
