"""Turn table rows (VLMEvalKit TSV or Hugging Face parquet/arrow) into Samples.

Both formats hold one question per row with the image inside; only the column names differ, and those come from
the task card (`fields`), so a new table-shaped benchmark needs a card, not code.
"""

from __future__ import annotations

import ast
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from PIL import Image

from pdrop_eval.data.prompts import OCR_PREFIX, all_options, inline_options, is_none, leading_options, mcq_prompt
from pdrop_eval.data.sample import Sample
from pdrop_eval.errors import PdropEvalError

ImageOpener = Callable[[Mapping[str, Any], Any], Callable[[], Image.Image]]
"""(row, sample id) -> zero-argument function that decodes that row's image when called."""

DEFAULT_FIELDS = {"id": "index", "question": "question", "answer": "answer", "hint": "hint"}


def answer_list(value: Any) -> list[str]:
    """Gold answers as a list of strings.

    VLMEvalKit stores lists as Python literals (`["Denny's", 'dennys']`), parsed with `ast.literal_eval`; a cell
    that is not a list literal is one answer, as VLMEvalKit's `istype(..., list)` check decides.
    """
    if isinstance(value, (list, tuple)):
        return [str(item) for item in value]
    if hasattr(value, "tolist"):
        return answer_list(value.tolist())
    text = str(value)
    if text.lstrip().startswith(("[", "(")):
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return [text]
        if isinstance(parsed, list):
            return [str(item) for item in parsed]
    return [text]


def plain(value: Any) -> Any:
    """Cell value with NaN/None as None and numpy scalars as Python ones (so ids keep a JSON-friendly type)."""
    if is_none(value) and not isinstance(value, str):
        return None
    return value.item() if hasattr(value, "item") else value


def pick_subset(rows: Sequence[Mapping[str, Any]], subset: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """A fixed subset for huge benchmarks (OCRVQA): `size` rows drawn with `random.Random(seed)`, file order kept."""
    if not subset:
        return list(rows)
    size, seed = int(subset["size"]), int(subset.get("seed", 0))
    if size >= len(rows):
        return list(rows)
    chosen = sorted(random.Random(seed).sample(range(len(rows)), size))
    return [rows[position] for position in chosen]


class _Fields:
    """Column names of one source: card `fields` over the VLMEvalKit defaults."""

    def __init__(self, options: Mapping[str, Any]):
        self.names = {**DEFAULT_FIELDS, **(options.get("fields") or {})}
        self.meta = dict(options.get("meta") or {})
        self.meta_values = dict(options.get("meta_values") or {})
        self.answer_is_list = bool(options.get("answer_list", False))

    def sample_id(self, row: Mapping[str, Any], number: int) -> Any:
        column = self.names["id"]
        return number if column is None else plain(row[column])

    def column(self, row: Mapping[str, Any], role: str) -> Any:
        name = self.names.get(role)
        return None if name is None else plain(row.get(name))

    def meta_of(self, row: Mapping[str, Any]) -> dict[str, Any]:
        meta = {}
        for key, column in self.meta.items():
            value = plain(row.get(column))
            meta[key] = self.meta_values.get(key, {}).get(value, value)
        return meta


def _check_columns(rows: Sequence[Mapping[str, Any]], fields: _Fields, roles: Iterable[str], where: str) -> None:
    if not rows:
        raise PdropEvalError(f"{where} holds no rows")
    wanted = [fields.names[role] for role in roles if fields.names.get(role) is not None]
    wanted += list(fields.meta.values())
    missing = [name for name in wanted if name not in rows[0]]
    if missing:
        raise PdropEvalError(f"{where} lacks the column(s) {missing}; it has {sorted(rows[0])}")


def vqa_samples(
    rows: Sequence[Mapping[str, Any]], options: Mapping[str, Any], suffix: str, open_image: ImageOpener, where: str
) -> list[Sample]:
    """Open-ended questions: prompt = question [+ TextVQA OCR line] + suffix; gold a string or a list."""
    fields = _Fields(options)
    rows = pick_subset(rows, options.get("subset"))
    _check_columns(rows, fields, ("id", "question", "answer"), where)
    ocr_column = fields.names.get("ocr_tokens")
    samples = []
    for number, row in enumerate(rows):
        sample_id = fields.sample_id(row, number)
        question = str(fields.column(row, "question"))
        prompt = question
        if ocr_column is not None:
            prompt += OCR_PREFIX + ", ".join(str(token) for token in row[ocr_column])
        answer = row[fields.names["answer"]]
        samples.append(
            Sample(
                id=sample_id,
                question=question,
                prompt=prompt + suffix,
                gold=answer_list(answer) if fields.answer_is_list else str(plain(answer)),
                image_source=f"{where}#{sample_id}",
                load_image=open_image(row, sample_id),
                meta=fields.meta_of(row),
            )
        )
    return samples


def _circular_index(sample_id: Any, where: str) -> int:
    """MMBench's `index` as an int (lmms-lab stores it as a string): circular groups are `index % 1_000_000`."""
    try:
        return int(sample_id)
    except (TypeError, ValueError) as err:
        raise PdropEvalError(f"{where}: multiple-choice index {sample_id!r} is not an integer") from err


def mcq_samples(
    rows: Sequence[Mapping[str, Any]], options: Mapping[str, Any], suffix: str, open_image: ImageOpener, where: str
) -> list[Sample]:
    """Multiple choice (MMBench, MMStar): options from columns A-D, listed in the prompt up to the first empty one
    as LLaVA does, unless the card says `list_options: false` (MMStar: its questions already spell the options
    out, and VLMEvalKit's TSV repeats them in columns). The matcher gets every option, from the columns or, when
    there are none, parsed from the question text."""
    fields = _Fields(options)
    list_in_prompt = bool(options.get("list_options", True))
    rows = pick_subset(rows, options.get("subset"))
    _check_columns(rows, fields, ("id", "question", "answer"), where)
    samples = []
    for number, row in enumerate(rows):
        sample_id = fields.sample_id(row, number)
        question = str(fields.column(row, "question"))
        listed = leading_options(row) if list_in_prompt else {}
        meta = fields.meta_of(row)
        meta["options"] = all_options(row) or inline_options(question)
        meta["index"] = _circular_index(sample_id, where)
        samples.append(
            Sample(
                id=sample_id,
                question=question,
                prompt=mcq_prompt(question, fields.column(row, "hint"), listed, suffix),
                gold=str(plain(row[fields.names["answer"]])),
                image_source=f"{where}#{sample_id}",
                load_image=open_image(row, sample_id),
                meta=meta,
            )
        )
    return samples
