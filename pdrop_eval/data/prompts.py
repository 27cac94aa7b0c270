"""The user-message text of each benchmark, built exactly as the reference evaluators build it.

Only the message goes here (no chat template, no `<image>`): the model's template wraps it later.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping
from typing import Any

OPTION_LETTERS = ("A", "B", "C", "D")
OCR_PREFIX = "\nReference OCR token: "


def is_none(value: Any) -> bool:
    """LLaVA's `is_none` for TSV/parquet cells: None, float NaN, or the strings 'nan'/'none' in any case.

    pandas already turns 'None', 'NA', 'nan'... into NaN; lmms-lab parquet keeps the string "nan".
    """
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.lower() in ("nan", "none")


def split_suffix(text: str, suffix: str) -> tuple[str, str]:
    """Split a stored LLaVA `text` into (text without the suffix, full prompt).

    LLaVA's jsonl files already end with the suffix; a hand-made file without it gets it appended so the
    prompt is always the one the reference used.
    """
    if suffix and text.endswith(suffix):
        return text[: -len(suffix)], text
    return text, text + suffix


def leading_options(row: Mapping[str, Any], letters: tuple[str, ...] = OPTION_LETTERS) -> dict[str, str]:
    """Options A, B, C... up to (not including) the first missing one, as LLaVA's `get_options` does."""
    options: dict[str, str] = {}
    for letter in letters:
        value = row.get(letter)
        if is_none(value):
            break
        options[letter] = str(value)
    return options


def all_options(row: Mapping[str, Any], letters: tuple[str, ...] = OPTION_LETTERS) -> dict[str, str]:
    """Every non-empty option A-Z, as VLMEvalKit's `build_choices` gives its matcher (it skips gaps, LLaVA stops)."""
    return {letter: str(row[letter]) for letter in letters if not is_none(row.get(letter))}


def mcq_prompt(question: str, hint: Any, options: Mapping[str, str], suffix: str) -> str:
    """`hint\\n` (if any) + question + `\\nA. ...` per option + suffix (LLaVA model_vqa_mmbench / VLMEvalKit LLaVA)."""
    text = question if is_none(hint) else f"{hint}\n{question}"
    for letter, option in options.items():
        text += f"\n{letter}. {option}"
    return text + suffix


def scienceqa_options(choices: Any) -> dict[str, str]:
    """ScienceQA's `choices` list as lettered options A, B, C... (`answer` indexes this list)."""
    return {string.ascii_uppercase[k]: str(choice) for k, choice in enumerate(choices)}


def scienceqa_prompt(hint: Any, question: str, choices: Any) -> str:
    """The message of one ScienceQA question as LLaVA's `llava_test_CQM-A.json` holds it: `Context: <hint>\\n` when
    there is a hint, the question, then `\\nA. <choice>` per choice (lmms-eval `scienceqa/utils.py`
    `sqa_doc_to_text`, format "default", builds the same text), `.strip()`ped as `model_vqa_science.py` strips
    the stored text. The suffix is added by the caller."""
    context = f"Context: {hint}\n" if hint else ""
    lines = [f"{letter}. {choice}" for letter, choice in scienceqa_options(choices).items()]
    return (f"{context}{question}\n" + "\n".join(lines)).strip()


_INLINE_OPTIONS = re.compile(r"Options:\s*")


def inline_options(question: str) -> dict[str, str]:
    """Options written inside an MMStar question: `...\\nOptions: A: x, B: y, C: z, D: w`.

    Letters are matched in order (`A: ` first, then `, B: `, `, C: `...) so commas inside an option survive.
    Returns {} when the question carries no such list.
    """
    found = _INLINE_OPTIONS.search(question)
    if not found:
        return {}
    body = question[found.end():]
    starts: list[tuple[str, int, int]] = []
    cursor = 0
    for index, letter in enumerate("ABCDEFGH"):
        marker = f"{letter}: " if index == 0 else f", {letter}: "
        position = body.find(marker, cursor)
        if position < 0 or (index == 0 and position != 0):
            break
        starts.append((letter, position, position + len(marker)))
        cursor = position + len(marker)
    options: dict[str, str] = {}
    for number, (letter, _, text_start) in enumerate(starts):
        end = starts[number + 1][1] if number + 1 < len(starts) else len(body)
        options[letter] = body[text_start:end].strip()
    return options
