"""`--scorer vlmeval`: score with VLMEvalKit's own dataset classes when the `vlmeval` package is installed.

The native scorers (pdrop_eval.metrics) reproduce VLMEvalKit's rules and stay the default; this adapter exists to
cross-check them. It writes the prediction file VLMEvalKit expects (the dataset TSV's columns without `image`, plus
`prediction`, as xlsx) and calls `build_dataset(name).evaluate(file)`, with rule-based matching for multiple
choice (no LLM judge). VLMEvalKit re-downloads a TSV whose md5 does not match its table, so the files in $LMUData
must be the published ones. `vlmeval` is imported lazily: it is an optional extra.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.store import atomic_path


def require_vlmeval() -> ModuleType:
    """The `vlmeval` package, or an error saying it is missing and what to do instead."""
    try:
        import vlmeval
    except ImportError as err:
        raise PdropEvalError(
            "--scorer vlmeval needs the `vlmeval` package (VLMEvalKit, https://github.com/open-compass/VLMEvalKit), "
            "which is not installed here; install it (`pip install -e .` in a VLMEvalKit checkout) or use the default "
            "--scorer native"
        ) from err
    return vlmeval


def write_prediction_xlsx(tsv_path: Path, predictions: Mapping[Any, str], out_path: Path) -> Path:
    """VLMEvalKit's prediction file: the TSV rows that were predicted (keyed by `index`), without the image column,
    with a `prediction` column. An index missing from the TSV is an error (the ids came from another file)."""
    import pandas as pd

    frame = pd.read_csv(tsv_path, sep="\t")
    unknown = set(predictions) - set(frame["index"].tolist())
    if unknown:
        raise PdropEvalError(
            f"{len(unknown)} prediction id(s) (e.g. {sorted(map(str, unknown))[:3]}) are not indices of {tsv_path}; "
            "--scorer vlmeval needs the task loaded from its VLMEvalKit TSV"
        )
    frame = frame[frame["index"].isin(list(predictions))].drop(columns=["image"], errors="ignore")
    frame["prediction"] = [str(predictions[index]) for index in frame["index"]]
    with atomic_path(out_path) as temporary:
        frame.to_excel(temporary, index=False)
    return out_path


def score_with_vlmeval(
    dataset_name: str, tsv_path: Path, predictions: Mapping[Any, str], out_dir: Path, model_name: str = "pdrop"
) -> Any:
    """Write `<out_dir>/<model>_<dataset>.xlsx` and return what VLMEvalKit's `evaluate` returns (a DataFrame or
    dict of scores)."""
    require_vlmeval()
    from vlmeval.dataset import build_dataset

    dataset = build_dataset(dataset_name)
    if dataset is None:
        raise PdropEvalError(f"VLMEvalKit does not know the dataset {dataset_name!r}")
    path = write_prediction_xlsx(Path(tsv_path), predictions, Path(out_dir) / f"{model_name}_{dataset_name}.xlsx")
    judge = {"model": "exact_matching"} if getattr(dataset, "TYPE", "") == "MCQ" else {}
    return dataset.evaluate(str(path), **judge)
