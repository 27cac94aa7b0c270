"""VLMEvalKit TSV files (`$LMUData/<Dataset>.tsv`), also the layout of LLaVA's `mmbench_dev_20230712.tsv`.

Read with pandas' default NA handling, as VLMEvalKit and LLaVA do: cells reading `None`, `NA`, `nan` become NaN
(which is what stops LLaVA's option listing). Images are base64 in `image`; a cell of at most 64 characters is the
`index` of another row holding the image (VLMEvalKit's space saver, used by the MMBench circular copies).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from pdrop_eval.data.images import decode_base64_image
from pdrop_eval.data.request import LoadRequest
from pdrop_eval.data.rows import mcq_samples, vqa_samples
from pdrop_eval.data.sample import Sample
from pdrop_eval.errors import PdropEvalError

IMAGE_REF_MAX_CHARS = 64


def read_tsv(path: Path) -> list[dict[str, Any]]:
    """All rows of a TSV as dicts, with every `image` cell holding the base64 image itself."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, sep="\t")
    except (OSError, ValueError) as err:
        raise PdropEvalError(f"cannot read the TSV {path}: {err}") from err
    rows = frame.to_dict("records")
    if rows and "image" in rows[0]:
        _resolve_image_refs(rows, path)
    return rows


def _resolve_image_refs(rows: list[dict[str, Any]], path: Path) -> None:
    by_index = {str(row["index"]): str(row["image"]) for row in rows}
    for row in rows:
        image = str(row["image"])
        if len(image) <= IMAGE_REF_MAX_CHARS:
            target = by_index.get(image)
            if target is None or len(target) <= IMAGE_REF_MAX_CHARS:
                raise PdropEvalError(
                    f"sample {row['index']!r}: its image cell {image!r} in {path} should be the index of a row "
                    "holding a base64 image, and no such row exists"
                )
            image = target
        row["image"] = image


def _base64_opener(path: Path, column: str):
    def opener(row: Mapping[str, Any], sample_id: Any):
        return partial(decode_base64_image, row[column], sample_id, f"{path} (column {column!r})")

    return opener


def load_vqa_tsv(request: LoadRequest) -> list[Sample]:
    """Open-ended VLMEvalKit datasets: DocVQA_VAL, ChartQA_TEST, InfoVQA_VAL, OCRVQA_TEST / OCRVQA_TESTCORE,
    GQA_TestDev_Balanced (`index`, `image`, `question`, `answer`, and `split` for ChartQA; VLMEvalKit
    docs/en/Development.md, TSV fields table)."""
    path = request.paths["tsv"]
    opener = _base64_opener(path, request.options.get("image_column", "image"))
    return vqa_samples(
        read_tsv(path), request.options, request.prompt_suffix, opener, str(path), absent=request.absent_columns
    )


def load_mcq_tsv(request: LoadRequest) -> list[Sample]:
    """Multiple-choice TSVs: MMBench (LLaVA's copy or VLMEvalKit's MMBench_DEV_EN: `hint`, `A`-`D`, `category`,
    `l2-category`, `split`) and MMStar (`category`, `l2_category`: the columns Lin-Chen/MMStar's own
    eval/vlmeval/evaluate/mmstar.py reads from its MMStar.tsv, also the name lmms-eval mmstar/utils.py reads)."""
    path = request.paths["tsv"]
    opener = _base64_opener(path, request.options.get("image_column", "image"))
    return mcq_samples(
        read_tsv(path), request.options, request.prompt_suffix, opener, str(path), absent=request.absent_columns
    )
