"""Turn table rows (VLMEvalKit TSV or Hugging Face parquet/arrow) into Samples.

Both formats hold one question per row with the image inside; only the column names differ, and those come from
the task card (`fields`), so a new table-shaped benchmark needs a card, not code.
"""

from __future__ import annotations

import ast
import random
from collections.abc import Callable, Mapping, Sequence
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
    """Column names of one source: card `fields` over the VLMEvalKit defaults, and `meta` columns, each either one
    name or a list of names the same column goes by in different copies (MMStar's `l2_category` / `l2-category`).

    `split` is the split a table part came from: a card listing several `splits` (lmms-lab/POPE `Full`: one split
    per category) gets ids qualified as `<split>/<id>`, since such ids restart in each split, and `split_meta`
    names the meta key the split name fills (POPE's `category`, which LLaVA's eval_pope groups by).
    """

    def __init__(self, options: Mapping[str, Any], split: str | None = None):
        self.names = {**DEFAULT_FIELDS, **(options.get("fields") or {})}
        self.image = str(options.get("image_column", "image"))
        self.meta = {key: _alternatives(column) for key, column in (options.get("meta") or {}).items()}
        self.meta_required = [str(key) for key in options.get("meta_required") or ()]
        self.meta_values = dict(options.get("meta_values") or {})
        self.answer_is_list = bool(options.get("answer_list", False))
        self.split = split
        self.qualify_ids = split is not None and len(options.get("splits") or ()) > 1
        self.split_meta = options.get("split_meta")
        self.meta_columns: dict[str, str] = {}

    def raw_id(self, row: Mapping[str, Any], number: int) -> Any:
        column = self.names["id"]
        return number if column is None else plain(row[column])

    def sample_id(self, row: Mapping[str, Any], number: int) -> Any:
        raw = self.raw_id(row, number)
        return f"{self.split}/{raw}" if self.qualify_ids else raw

    def column(self, row: Mapping[str, Any], role: str) -> Any:
        name = self.names.get(role)
        return None if name is None else plain(row.get(name))

    def meta_of(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Only the meta columns the file has: a key left out (not set to None) is how metrics know a breakdown
        is unavailable."""
        meta = {}
        for key, column in self.meta_columns.items():
            value = plain(row.get(column))
            meta[key] = self.meta_values.get(key, {}).get(value, value)
        if self.split_meta and self.split is not None:
            meta[str(self.split_meta)] = self.split
        return meta


def _alternatives(column: Any) -> list[str]:
    return [str(name) for name in column] if isinstance(column, (list, tuple)) else [str(column)]


def require_columns(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str | None], where: str) -> set[str]:
    """The table's column names, once every `role: column` given (None: the card reads none) is among them; else
    one error naming the file, the column and the columns the file has."""
    if not rows:
        raise PdropEvalError(f"{where} holds no rows")
    present = set(rows[0])
    for role, column in columns.items():
        if column is not None and column not in present:
            raise PdropEvalError(
                f"{where} lacks the {role} column {column!r}; its columns are {sorted(present)}. Use the official "
                "file, or name the column under `fields` in the task card"
            )
    return present


REQUIRED_ROLES = ("id", "question", "answer", "ocr_tokens")
"""Roles a sample cannot be built without (`ocr_tokens` only where the card names it: TextVQA)."""


def _check_columns(
    rows: Sequence[Mapping[str, Any]], fields: _Fields, where: str, absent: set[str] | None, *, uses_hint: bool
) -> None:
    """Required columns (id, question, answer, image) missing: one error naming the file, the column and the
    columns it has. Metadata columns (category, l2-category, split, hint...) missing: noted in `absent` and the
    task runs without them, unless the card lists them under `meta_required` (a metric that cannot do without).
    Records in `fields.meta_columns` which name each meta column goes by in this file."""
    required = {role: fields.names.get(role) for role in REQUIRED_ROLES}
    present = require_columns(rows, {**required, "image": fields.image}, where)
    missing: list[str] = []
    for key, alternatives in fields.meta.items():
        found = next((name for name in alternatives if name in present), None)
        if found is not None:
            fields.meta_columns[key] = found
        elif fields.split_meta == key and fields.split is not None:
            continue
        elif key in fields.meta_required:
            raise PdropEvalError(
                f"{where} lacks the column {' or '.join(map(repr, alternatives))} ({key}), which the task's metric "
                f"needs; its columns are {sorted(present)}"
            )
        else:
            missing.append(" or ".join(alternatives))
    hint = fields.names.get("hint")
    if uses_hint and hint is not None and hint not in present:
        missing.append(hint)
    if absent is not None:
        absent.update(missing)


def vqa_samples(
    rows: Sequence[Mapping[str, Any]],
    options: Mapping[str, Any],
    suffix: str,
    open_image: ImageOpener,
    where: str,
    *,
    split: str | None = None,
    absent: set[str] | None = None,
) -> list[Sample]:
    """Open-ended questions: prompt = question [+ TextVQA OCR line] + suffix; gold a string or a list.
    `split` and `absent`: see `_Fields` and `_check_columns`."""
    fields = _Fields(options, split)
    rows = pick_subset(rows, options.get("subset"))
    _check_columns(rows, fields, where, absent, uses_hint=False)
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
    rows: Sequence[Mapping[str, Any]],
    options: Mapping[str, Any],
    suffix: str,
    open_image: ImageOpener,
    where: str,
    *,
    split: str | None = None,
    absent: set[str] | None = None,
) -> list[Sample]:
    """Multiple choice (MMBench, MMStar): options from columns A-D, listed in the prompt up to the first empty one
    as LLaVA does, unless the card says `list_options: false` (MMStar: its questions already spell the options
    out, and VLMEvalKit's TSV repeats them in columns). The matcher gets every option, from the columns or, when
    there are none, parsed from the question text."""
    fields = _Fields(options, split)
    list_in_prompt = bool(options.get("list_options", True))
    rows = pick_subset(rows, options.get("subset"))
    _check_columns(rows, fields, where, absent, uses_hint=True)
    samples = []
    for number, row in enumerate(rows):
        sample_id = fields.sample_id(row, number)
        question = str(fields.column(row, "question"))
        listed = leading_options(row) if list_in_prompt else {}
        meta = fields.meta_of(row)
        meta["options"] = all_options(row) or inline_options(question)
        meta["index"] = _circular_index(fields.raw_id(row, number), where)
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
