"""Every `lmms_eval/*` number equals lmms-eval 0.7.3's own functions on the same (prediction, gold, metadata).

lmms-eval is installed by `make install` (`pip install --no-deps lmms-eval==0.7.3` plus the few packages its task
modules import, listed in the `test` extra). Each task is run the way lmms-eval runs it: its YAML card says which
per-sample and aggregation functions apply, `ConfigurableTask.process_results` (which strips the generation first)
scores each document, and each metric's aggregation reduces the per-document values. lmms-eval reports fractions;
our columns are percentages, so ours must equal 100 × theirs, computed in the same order (exact equality).
"""

from __future__ import annotations

import importlib
import math
import random
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from pdrop_eval.metrics import get_metric, scienceqa, seed
from pdrop_eval.metrics.exact import lmms_eval_exact
from pdrop_eval.metrics.lmms_eval_mcq import extract_mcq_letter

LMMS_EVAL_VERSION = "0.7.3"


@pytest.fixture(scope="module")
def lmms_eval():
    """The installed lmms-eval package; a missing or different version is a failure, never a skip."""
    try:
        version = metadata.version("lmms_eval")
        package = importlib.import_module("lmms_eval")
        importlib.import_module("lmms_eval.api.task")
    except (metadata.PackageNotFoundError, ImportError) as err:
        pytest.fail(f"lmms-eval {LMMS_EVAL_VERSION} is not importable ({err}); run `make install`")
    assert version == LMMS_EVAL_VERSION, f"lmms-eval {version} installed, these columns follow {LMMS_EVAL_VERSION}"
    return package


class _FunctionRef(str):
    """A `!function utils.name` reference in an lmms-eval card, kept as its dotted name."""


class _CardLoader(yaml.SafeLoader):
    """Reads lmms-eval cards without importing anything: `!function` tags become `_FunctionRef` strings."""


_CardLoader.add_constructor("!function", lambda loader, node: _FunctionRef(loader.construct_scalar(node)))


def read_card(path: Path) -> dict[str, Any]:
    """A card with its `include` merged underneath it, as `lmms_eval.utils.load_yaml_config` merges them."""
    card = yaml.load(path.read_text(), Loader=_CardLoader)
    included = card.pop("include", None)
    return card if included is None else {**read_card(path.parent / included), **card}


def run_lmms_eval_task(
    task: str, docs: Sequence[dict[str, Any]], predictions: Sequence[str], folder: str | None = None
) -> dict[str, float]:
    """lmms-eval 0.7.3's numbers for `task` (its card `tasks/<folder>/<task>.yaml`, the folder named after the task
    unless given) on these documents and generations."""
    from lmms_eval.api.registry import METRIC_REGISTRY, get_aggregation
    from lmms_eval.api.task import ConfigurableTask

    utils = importlib.import_module(f"lmms_eval.tasks.{folder or task}.utils")
    card = read_card(Path(utils.__file__).parent / f"{task}.yaml")
    assert card["task"] == task, f"{task}.yaml names task {card['task']!r}"

    def resolve(ref: _FunctionRef) -> Callable:
        module, name = ref.split(".")
        assert module == "utils", ref
        return getattr(utils, name)

    process_results = resolve(card["process_results"]) if "process_results" in card else None
    metric_fns, metric_kwargs, aggregations = {}, {}, {}
    for entry in card["metric_list"]:
        name = entry["metric"]
        # As ConfigurableTask.__init__: with a task-level process_results the metric functions are unused.
        metric_fns[name] = None if process_results else METRIC_REGISTRY[name]
        metric_kwargs[name] = {} if process_results else {
            k: v for k, v in entry.items() if k not in ("metric", "aggregation", "higher_is_better")
        }  # fmt: skip
        agg = entry["aggregation"]
        aggregations[name] = resolve(agg) if isinstance(agg, _FunctionRef) else get_aggregation(agg)
    # The attributes ConfigurableTask.process_results reads, set as its constructor sets them from this card.
    configured = SimpleNamespace(
        OUTPUT_TYPE=card["output_type"],
        config=SimpleNamespace(process_results=process_results, doc_to_choice=None),
        _metric_fn_list=metric_fns,
        _metric_fn_kwargs=metric_kwargs,
        multiple_target=False,
        doc_to_target=lambda doc: doc[card["doc_to_target"]],
    )
    per_doc = [ConfigurableTask.process_results(configured, doc, [p]) for doc, p in zip(docs, predictions)]
    return {
        name: aggregate([r[name] for r in per_doc if name in r])
        for name, aggregate in aggregations.items()
        if any(name in r for r in per_doc)
    }


def _fuzz_strings(alphabet: Sequence[str], count: int, seed: int) -> list[str]:
    """Deterministic random strings glued from pieces that matter to the rules under test."""
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 7))) for _ in range(count)]


# GQA ---------------------------------------------------------------------------------------------------------

GQA_CASES = [
    ("yes", "yes"),
    ("Yes.", "yes"),
    ("yes!", "yes"),  # lmms-eval deletes every punctuation mark; LLaVA would not
    ("T-shirt", "t-shirt"),
    ("The cat", "cat"),  # no article removal in either rule
    (" left \n", "left"),  # ConfigurableTask.process_results strips the generation
    ("", "yes"),
    ("Yes, there is", "yes"),
    ("(B) cat", "cat"),
    ("U.S.", "us"),
    ("two", "2"),
    ("it's", "its"),
    ("Left", "Left"),  # the gold answer is lowercased too
    ("no\tway", "no way"),
]


def test_gqa_column_equals_lmms_eval(lmms_eval):
    predictions, golds = zip(*GQA_CASES)
    docs = [{"answer": g} for g in golds]
    theirs = run_lmms_eval_task("gqa", docs, predictions)
    metric = get_metric("exact_match")
    ours = metric.aggregate([metric.record(i, p, g) for i, (p, g) in enumerate(GQA_CASES)])
    assert ours["lmms_eval/accuracy"] == 100 * theirs["exact_match"]
    assert set(theirs) == {"exact_match"}


def test_gqa_rule_equals_lmms_eval_sample_by_sample(lmms_eval):
    pieces = ["Yes", "yes", "no", " ", ".", "!", "-", "'", "\n", "the", "T", "é", "İ", "2", "\t", ","]
    fuzz = _fuzz_strings(pieces, 400, seed=7)
    cases = GQA_CASES + [(p, g) for p, g in zip(fuzz, fuzz[1:] + fuzz[:1])] + [(p, p.strip(".")) for p in fuzz]
    for prediction, gold in cases:
        theirs = run_lmms_eval_task("gqa", [{"answer": gold}], [prediction])["exact_match"]
        assert lmms_eval_exact(prediction, gold) == (theirs == 1.0), (prediction, gold)


# POPE --------------------------------------------------------------------------------------------------------

POPE_ROWS = [  # (category, gold, prediction)
    ("adversarial", "yes", "Yes"),
    ("adversarial", "yes", "Yes, there is a dog."),  # LLaVA: yes; lmms-eval: neither yes nor no
    ("adversarial", "yes", " yes \n"),
    ("adversarial", "no", "Yes"),
    ("adversarial", "no", "No."),
    ("adversarial", "no", "There is no dog."),
    ("adversarial", "yes", "not sure"),
    ("popular", "no", "NO"),
    ("popular", "no", ""),
    ("random", "yes", "Yes"),
    ("random", "yes", "No"),
    ("random", "no", "no"),
]


def _pope_columns(rows):
    metric = get_metric("pope")
    records = [metric.record(i, p, g, {"category": c}) for i, (c, g, p) in enumerate(rows)]
    ours = metric.aggregate(records)
    docs = [{"question_id": i, "answer": g, "category": c} for i, (c, g, _) in enumerate(rows)]
    theirs = run_lmms_eval_task("pope", docs, [p for _, _, p in rows])
    return ours, theirs


@pytest.mark.parametrize(
    "rows",
    [
        POPE_ROWS,
        [("random", "yes", "No"), ("random", "no", "no")],  # no "yes" predicted: precision and F1 fall back to 0
        [("popular", "yes", "Yes."), ("popular", "no", "Nope")],  # nothing parses: every rate is 0
    ],
)
def test_pope_columns_equal_lmms_eval(lmms_eval, rows):
    ours, theirs = _pope_columns(rows)
    assert ours["lmms_eval/accuracy"] == 100 * theirs["pope_accuracy"]
    assert ours["lmms_eval/precision"] == 100 * theirs["pope_precision"]
    assert ours["lmms_eval/recall"] == 100 * theirs["pope_recall"]
    assert ours["lmms_eval/f1"] == 100 * theirs["pope_f1_score"]
    # lmms-eval's pope_yes_ratio is the share of "yes" GOLD labels, not of predictions: not reported as ours.
    assert not any(key.startswith("lmms_eval/yes") for key in ours)


def test_pope_columns_by_hand(lmms_eval):
    # Parsed by lmms-eval: rows 0, 2, 3, 7, 9, 10, 11 ("NO" lowercases to "no"). TP = 3 (0, 2, 9), FP = 1 (3),
    # TN = 2 (7, 11), FN = 1 (10); rows 1, 4, 5, 6, 8 are wrong answers that count nowhere else.
    ours, _ = _pope_columns(POPE_ROWS)
    assert ours["lmms_eval/accuracy"] == pytest.approx(5 / 12 * 100)
    assert ours["lmms_eval/precision"] == pytest.approx(75.0)
    assert ours["lmms_eval/recall"] == pytest.approx(75.0)


# MMStar ------------------------------------------------------------------------------------------------------

MMSTAR_OPTIONS = {"A": "cat", "B": "dog", "C": "bird", "D": "fish"}
MMSTAR_ROWS = [  # (category, l2-category, gold, prediction)
    ("coarse perception", "image scene and topic", "A", "A"),
    ("coarse perception", "image scene and topic", "B", "(B) dog"),
    ("coarse perception", "image scene and topic", "C", "The answer is C"),
    ("coarse perception", "image emotion", "D", "Answer: D"),
    ("coarse perception", "image emotion", "A", ""),
    ("fine-grained perception", "object counting", "B", "b"),  # lowercase letters are not read
    ("fine-grained perception", "object counting", "C", "I choose C."),
    ("fine-grained perception", "localization", "D", "dog"),  # option text is not read
    ("math", "geometry", "A", "A or B"),  # VLMEvalKit reads nothing here
    ("math", "geometry", "B", "答案是B"),
    ("math", "statistical reasoning", "C", "C) bird\nbecause it flies"),
    ("logical reasoning", "diagram reasoning", "D", "A: no. D: yes, D"),  # one sample in its category
]


def _mmstar_records():
    metric = get_metric("mcq_accuracy")
    return metric, [
        metric.record(i, p, g, {"options": MMSTAR_OPTIONS, "category": c, "l2-category": l2})
        for i, (c, l2, g, p) in enumerate(MMSTAR_ROWS)
    ]


def test_mmstar_columns_equal_lmms_eval(lmms_eval):
    metric, records = _mmstar_records()
    ours = metric.aggregate(records)
    docs = [{"index": i, "answer": g, "category": c, "l2_category": l2} for i, (c, l2, g, _) in enumerate(MMSTAR_ROWS)]
    theirs = run_lmms_eval_task("mmstar", docs, [p for *_, p in MMSTAR_ROWS])
    assert set(theirs) == {"average", "coarse perception", "fine-grained perception", "math", "logical reasoning"}
    for name, value in theirs.items():
        assert ours[f"lmms_eval/{name}"] == 100 * value, name
    assert {k for k in ours if k.startswith("lmms_eval/")} == {f"lmms_eval/{name}" for name in theirs}


def test_mmstar_average_is_macro_over_l2_categories(lmms_eval):
    # lmms-eval hits rows 0-3, 6, 8 ("A or B": a letter alone at the start wins), 9 and 10; it misses row 11 (the
    # leading "A:" outranks the final "D"). Per l2: scene 3/3, emotion 1/2, counting 1/2, localization 0/1,
    # geometry 2/2, statistical 1/1, diagram 0/1: the plain mean of those seven (4/7), not 8/12.
    metric, records = _mmstar_records()
    ours = metric.aggregate(records)
    assert ours["lmms_eval/average"] == pytest.approx(4 / 7 * 100)
    assert ours["lmms_eval/coarse perception"] == pytest.approx((1 + 0.5) / 2 * 100)
    assert ours["lmms_eval/logical reasoning"] == 0.0


MCQ_CASES = [
    "A", "B.", "(C)", "D)", "C:", "The answer is B", "the answer is b", "Answer: D", "answer is probably Dog",
    "I think A, but the correct answer is (C).", "A or B", "B is the answer", "Definitely D", "dog", "", "   ",
    "E", "Option B", "option b", "選B", "答案为C", "정답은 D", "\"B.\"", "'(A)'", "C) bird", "A.B.C", "ABCD",
    "The best option is C because B is wrong", "I choose C.", "\nA\n", "Ä", "İ the answer is B",
]  # fmt: skip


def test_mcq_letter_extraction_equals_lmms_eval(lmms_eval):
    from lmms_eval.tasks._task_utils.mcq_extract import extract_mcq_answer

    pieces = ["A", "B", "C", "D", "(", ")", ".", ":", ",", " ", "\n", "answer is ", "The ", "i choose ", "'", '"']
    pieces += ["a", "Dog", "cat", "!", "选", "İ", "option "]
    for response in MCQ_CASES + _fuzz_strings(pieces, 3000, seed=11):
        assert extract_mcq_letter(response) == extract_mcq_answer(response, choices=["A", "B", "C", "D"]), response


# ScienceQA-IMG (lmms-eval task `scienceqa_img`, card and utils in tasks/scienceqa/) ------------------------------

SCIENCEQA_CASES = [  # (prediction, gold letter, number of choices)
    ("B", "B", 3),
    ("b", "B", 3),  # the whole answer is compared ignoring case
    ("B.", "B", 2),  # an uppercase letter and "." is read, no space needed...
    ("b.", "B", 2),  # ...but only an uppercase one
    ("B. dog", "B", 4),
    ("(B) cat", "B", 3),
    ("B)", "B", 3),
    ("The answer is B.", "B", 2),
    ("", "A", 2),
    ("  C.  ", "C", 3),  # ConfigurableTask.process_results strips first
    ("A.", "B", 2),
    ("E.", "E", 5),
    ("Answer: B", "B", 2),
    ("B,", "B", 2),
    ("B.C", "C", 3),
    ("Ä.", "A", 2),  # a non-ASCII capital passes isupper() and is then compared
    ("答案是B", "B", 2),
    ("B。", "B", 2),
    ("Because the north pole faces the south pole, the magnets attract, so the answer is B. " * 3, "B", 2),
    ("\nD.\n", "D", 4),
]


def _scienceqa_doc(gold: str, n_choices: int) -> dict[str, Any]:
    """An lmms-lab/ScienceQA row as `sqa_doc_to_target` reads it: the answer is an index into `choices`."""
    return {"choices": [f"choice {k}" for k in range(n_choices)], "answer": ord(gold) - ord("A")}


def _scienceqa_theirs(cases: Sequence[tuple[str, str, int]]) -> dict[str, float]:
    docs = [_scienceqa_doc(gold, n) for _, gold, n in cases]
    return run_lmms_eval_task("scienceqa_img", docs, [p for p, _, _ in cases], folder="scienceqa")


def test_scienceqa_img_column_equals_lmms_eval(lmms_eval):
    metric = get_metric("scienceqa_accuracy")
    ours = metric.aggregate([metric.record(i, p, gold) for i, (p, gold, _) in enumerate(SCIENCEQA_CASES)])
    theirs = _scienceqa_theirs(SCIENCEQA_CASES)
    assert set(theirs) == {"exact_match"}
    assert ours["lmms_eval/accuracy"] == 100 * theirs["exact_match"]


def test_scienceqa_rule_equals_lmms_eval_sample_by_sample(lmms_eval):
    pieces = ["A", "B", "b", "C", "E", ".", ". ", " ", "\n", "(", ")", "The answer is ", "Ä", "答", "。", ",", ":"]
    fuzz = _fuzz_strings(pieces, 500, seed=13)
    cases = [(p, gold) for p, gold, _ in SCIENCEQA_CASES] + [(p, "ABCDE"[i % 5]) for i, p in enumerate(fuzz)]
    for prediction, gold in cases:
        theirs = _scienceqa_theirs([(prediction, gold, 5)])["exact_match"]
        assert scienceqa.lmms_eval_hit(prediction, gold) == (theirs == 1.0), (prediction, gold)


# MME ---------------------------------------------------------------------------------------------------------

MME_PREDICTIONS = [
    "Yes", "No", "yes.", "No.", "Y", "n.", "y", "N", "y.e.s", "", "Yes, there is a dog in the image.",
    "No, there isn't.", "Not sure", "None", "eyes", "snow", "The answer is yes", "是", "不是", "YES!", "no way",
    "I cannot tell whether the image shows a red car parked beside the old stone bridge, sorry.", " yes \n",
]  # fmt: skip


def _mme_rows(images_per_subtask: dict[str, int], seed: int) -> list[tuple[str, str, str, str]]:
    """(subtask, image, gold, prediction) for two questions (gold Yes, then No) on each image, the images of all
    subtasks shuffled together so subtasks first appear in a seed-dependent order."""
    rng = random.Random(seed)
    images = [(s, f"{s}/{k:04d}.png") for s, count in images_per_subtask.items() for k in range(count)]
    rng.shuffle(images)
    return [(s, image, gold, rng.choice(MME_PREDICTIONS)) for s, image in images for gold in ("Yes", "No")]


def _mme_columns(rows: Sequence[tuple[str, str, str, str]]) -> tuple[dict[str, float], dict[str, float]]:
    metric = get_metric("mme")
    records = [metric.record(i, p, gold, {"category": s, "image": image}) for i, (s, image, gold, p) in enumerate(rows)]
    # lmms-lab/MME rows: question_id is the image path, shared by an image's two questions.
    docs = [{"question_id": image, "answer": gold, "category": s} for s, image, gold, _ in rows]
    return metric.aggregate(records), run_lmms_eval_task("mme", docs, [p for *_, p in rows])


def _assert_mme_totals_equal(ours: dict[str, float], theirs: dict[str, float], groups: set[str]) -> None:
    """Equal where lmms-eval reports a group; NaN where it reports none."""
    assert set(theirs) == {f"mme_{group}_score" for group in groups}
    for group in ("perception", "cognition"):
        if group in groups:
            assert ours[f"lmms_eval/{group}"] == theirs[f"mme_{group}_score"], group
        else:
            assert math.isnan(ours[f"lmms_eval/{group}"]), group


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_mme_totals_equal_lmms_eval(lmms_eval, seed):
    from pdrop_eval.metrics.mme import COGNITION, PERCEPTION

    # 1-3 images per subtask; "count" has a single image, so its score is 0, 150 or 200 from one pair.
    images = {s: 1 if s == "count" else 1 + (k + seed) % 3 for k, s in enumerate(PERCEPTION + COGNITION)}
    ours, theirs = _mme_columns(_mme_rows(images, seed))
    _assert_mme_totals_equal(ours, theirs, {"perception", "cognition"})


@pytest.mark.parametrize(
    ("images", "groups"),
    [
        ({"existence": 2, "OCR": 1, "color": 3}, {"perception"}),  # no cognition record: lmms-eval has no number
        ({"code_reasoning": 2, "text_translation": 1}, {"cognition"}),
        ({"existence": 2, "artwork_v2": 2}, {"perception", "cognition"}),  # not a perception subtask: cognition
        ({"count": 1}, {"perception"}),  # one subtask, one image
    ],
)
def test_mme_totals_equal_lmms_eval_on_partial_runs(lmms_eval, images, groups):
    ours, theirs = _mme_columns(_mme_rows(images, seed=5))
    _assert_mme_totals_equal(ours, theirs, groups)


def test_mme_image_with_one_question_has_no_lmms_eval_total(lmms_eval):
    # A pair cut by --limit: lmms-eval's aggregation asserts two questions per image and stops; ours is NaN for
    # that group only, the other group still equal to lmms-eval on its own records.
    paired = _mme_rows({"existence": 2, "code_reasoning": 2}, seed=6)
    lone = ("color", "color/0000.png", "Yes", "Yes")
    with pytest.raises(AssertionError, match="pairwise"):
        _mme_columns([*paired, lone])
    metric = get_metric("mme")
    rows = [*paired, lone]
    ours = metric.aggregate(
        [metric.record(i, p, gold, {"category": s, "image": image}) for i, (s, image, gold, p) in enumerate(rows)]
    )
    _, theirs = _mme_columns([row for row in paired if row[0] == "code_reasoning"])
    _assert_mme_totals_equal(ours, theirs, {"cognition"})


# SEED-Bench image (lmms-eval task `seedbench`) ---------------------------------------------------------------

SEED_CASES = [  # (question id, gold, prediction)
    ("1", "B", "B"),
    ("2", "B", "b"),  # its aggregation compares ignoring case
    ("3", "B", "B."),
    ("4", "B", "b. cat"),
    ("5", "B", "(B) cat"),
    ("6", "B", "The answer is B."),
    ("7", "A", ""),
    ("8", "C", "  C \n"),
    ("9", "B", "Bird"),  # the first character of a longer answer is all that counts
    ("10", "B", "答案是B"),
    ("11", "B", "Ｂ"),  # a fullwidth letter is not the letter
    ("12", "A", "A long explanation: the car is red, so the answer must be C"),
    ("13", "C", "c"),
    ("49914", "C", "C"),  # a repeated id: lmms-eval judges each question by its own answer
    ("49914", "B", "A"),
]


def _seed_columns(rows: Sequence[tuple[str, str, str]]) -> tuple[dict[str, float], dict[str, float]]:
    metric = get_metric("seed_image")
    ours = metric.aggregate([metric.record(i, p, g, {"question_id": q}) for i, (q, g, p) in enumerate(rows)])
    docs = [{"question_id": q, "answer": g, "data_type": "image"} for q, g, _ in rows]
    return ours, run_lmms_eval_task("seedbench", docs, [p for *_, p in rows])


def test_seedbench_column_equals_lmms_eval(lmms_eval):
    ours, theirs = _seed_columns(SEED_CASES)
    assert set(theirs) == {"seed_image", "seed_all"}
    assert ours["lmms_eval/accuracy"] == 100 * theirs["seed_image"] == 100 * theirs["seed_all"]


def test_seedbench_rule_equals_lmms_eval_sample_by_sample(lmms_eval):
    pieces = ["A", "B", "b", "c", "D", ".", " ", "\n", "(", ")", "The answer is ", "答", "Ｂ", "İ", "\u200b", ":"]
    fuzz = _fuzz_strings(pieces, 500, seed=17)
    cases = [(g, p) for _, g, p in SEED_CASES] + [("ABCD"[i % 4], p) for i, p in enumerate(fuzz)]
    for gold, prediction in cases:
        theirs = _seed_columns([("1", gold, prediction)])[1]["seed_image"]
        assert seed.lmms_eval_hit(prediction, gold) == (theirs == 1.0), (prediction, gold)


# MMBench-CN --------------------------------------------------------------------------------------------------


def test_mmbench_cn_carries_no_lmms_eval_column(lmms_eval):
    # lmms-eval 0.7.3 scores mmbench_cn_dev only through a GPT judge (gpt_eval_score) or as a submission file, so
    # there is no offline lmms-eval number to reproduce: the circular scorer must not claim one.
    card = read_card(Path(lmms_eval.__file__).parent / "tasks" / "mmbench" / "mmbench_cn_dev.yaml")
    assert {entry["metric"] for entry in card["metric_list"]} == {"gpt_eval_score", "submission"}
    metric = get_metric("mmbench_circular")
    options = {"A": "猫", "B": "狗", "C": "鸟", "D": "鱼"}
    meta = {"options": options, "category": "ocr", "l2-category": "perception"}
    rows = [(3, "B", "B"), (1_000_003, "A", "答案是A"), (4, "C", "(C) 鸟"), (1_000_004, "D", "")]
    out = metric.aggregate([metric.record(i, p, g, {**meta, "index": i}) for i, g, p in rows])
    assert "circular_accuracy" in out
    assert not any(key.startswith("lmms_eval/") for key in out)
