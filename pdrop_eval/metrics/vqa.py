"""TextVQA accuracy exactly as LLaVA scores it: `llava/eval/m4c_evaluator.py`.

`normalize_vqa_answer` reproduces `EvalAIAnswerProcessor.__call__` (itself MMF's copy of the EvalAI VQA
normaliser) and `vqa_accuracy` reproduces `TextVQAAccuracyEvaluator`: for each of the 10 human answers, the
prediction earns min(1, matches among the other 9 / 3); the sample's score is the mean of those 10 numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.metrics.base import Metric, ScoredRecord, empty_result, percent_python

_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
_ARTICLES = frozenset({"a", "an", "the"})
# EvalAI's contraction table (mixed-case keys such as "Im" never match: the text is lowercased first).
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's", "whereve": "where've",
    "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's",
    "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've",
    "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've",
    "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip
# EvalAI's punctuation list, minus "," (already deleted by the tokenize step, so it can never be present here).
_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", "?", "!")
# EvalAI writes `(?!<=\d)(\.)(?!\d)`: the first group is a typo'd lookbehind that is really a lookahead for the
# literal "<=" and so always holds. What remains: drop every "." that is not followed by a digit.
_PERIOD = re.compile(r"\.(?!\d)")
# EvalAI calls `PERIOD_STRIP.sub("", text, re.UNICODE)`: the flag lands in `count`, so at most 32 periods go.
_PERIOD_COUNT = int(re.UNICODE)


def _strip_punctuation(text: str) -> str:
    """EvalAI `process_punctuation`: a mark touching a space is deleted, otherwise it becomes a space.

    The test looks at the text as it was before any replacement, which is why "a - b/c" loses its "-" but turns
    "/" into a space.
    """
    out = text
    for mark in _PUNCTUATION:
        spaced = mark + " " in text or " " + mark in text
        out = out.replace(mark, "" if spaced else " ")
    return _PERIOD.sub("", out, count=_PERIOD_COUNT)


def _digits_articles_contractions(text: str) -> str:
    """EvalAI `process_digit_article`: number words to digits, drop a/an/the, restore common contractions."""
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words)


def normalize_vqa_answer(answer: str) -> str:
    """EvalAI answer processor, step by step as `EvalAIAnswerProcessor.__call__`.

    Lowercase; delete "," and "?"; split "'s" off ("it's" -> "it 's"); newlines/tabs to spaces; punctuation;
    periods not followed by a digit; number words; articles; contractions. So "1,000" -> "1000" but also
    "hello,world" -> "helloworld"; "3.14" keeps its period, "a.b" -> "ab".
    """
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _digits_articles_contractions(_strip_punctuation(text))


def vqa_soft_score(prediction: str, answers: Sequence[str]) -> float:
    """`TextVQAAccuracyEvaluator` for one sample: leave-one-annotator-out, averaged over the 10 annotators.

    An answer given by k of the 10 annotators scores (k·min(1,(k-1)/3) + (10-k)·min(1,k/3)) / 10:
    k=1 -> 0.3, k=2 -> 0.6, k=3 -> 0.9, k>=4 -> 1.0.
    """
    if len(answers) != 10:
        raise PdropEvalError(
            f"VQA accuracy needs exactly 10 human answers per question (LLaVA's m4c evaluator asserts it), "
            f"got {len(answers)}: {list(answers)!r}; check the TextVQA annotation join in the loader"
        )
    gold = [normalize_vqa_answer(a) for a in answers]
    pred = normalize_vqa_answer(prediction)
    accs = []
    for i in range(len(gold)):
        matches = sum(1 for j, g in enumerate(gold) if j != i and g == pred)
        accs.append(min(1, matches / 3))
    return sum(accs) / len(accs)


def _score(prediction: str, gold: Any, meta: Mapping[str, Any]) -> float:
    if not isinstance(gold, (list, tuple)) or not all(isinstance(a, str) for a in gold):
        raise PdropEvalError(f"metric 'vqa_accuracy' needs gold as the list of 10 answer strings, got {gold!r}")
    return vqa_soft_score(prediction, gold)


def _aggregate(records: Sequence[ScoredRecord]) -> dict[str, float]:
    """LLaVA `eval_textvqa.py`: `100 * sum(scores) / len(scores)`."""
    if not records:
        return empty_result("accuracy")
    return {"accuracy": percent_python([r.score for r in records]), "n": float(len(records))}


VQA_ACCURACY = Metric(
    name="vqa_accuracy",
    primary="accuracy",
    score=_score,
    aggregate=_aggregate,
    reference="LLaVA llava/eval/m4c_evaluator.py TextVQAAccuracyEvaluator (EvalAI answer processor)",
)
