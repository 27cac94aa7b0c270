"""MME and SEED-Bench loaders on fixtures in LLaVA's eval-folder layout and the lmms-lab parquet layout."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from pdrop_eval.errors import PdropEvalError
from tests.fixtures_data import (
    MME_SUBTASKS,
    load_fixture_task,
    write_hf_mme,
    write_hf_seed,
    write_llava_mme,
    write_llava_seed,
)


def test_llava_mme_joins_answers_from_the_release_folder(tmp_path):
    expected = write_llava_mme(tmp_path)
    samples = load_fixture_task("mme", tmp_path)
    assert [s.id for s in samples] == expected["ids"]
    assert [s.gold for s in samples] == expected["gold"]
    assert [s.prompt for s in samples] == expected["prompts"]
    assert [s.meta["category"] for s in samples] == expected["categories"]
    assert [s.meta["image"] for s in samples] == expected["images"]
    assert {s.meta["category"] for s in samples} == set(MME_SUBTASKS)
    by_id = {s.id: s for s in samples}
    # The two-space MME question and the one without a question mark still find their answers.
    assert by_id["color/color_0001.png#1"].gold == "No"
    assert by_id["position/position_0001.png#0"].question == "Is the refrigerator on the right side of the picture"
    # Nested subtasks keep their images under images/.
    image = by_id["artwork/images/artwork_0001.png#0"].load_image()
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    assert by_id["artwork/images/artwork_0001.png#0"].image_source.endswith("artwork/images/artwork_0001.png")


def test_llava_mme_question_without_an_answer_is_one_clear_error(tmp_path):
    write_llava_mme(tmp_path, subtasks=("existence",))
    qa = tmp_path / "MME/MME_Benchmark_release_version/existence/existence_0001.txt"
    qa.write_text("Some other question? Please answer yes or no.\tYes\n", encoding="utf-8")
    with pytest.raises(PdropEvalError, match="no answer for 'Is this a existence question with a yes answer"):
        load_fixture_task("mme", tmp_path)


def test_llava_mme_answer_file_in_the_wrong_layout_is_named(tmp_path):
    write_llava_mme(tmp_path, subtasks=("existence",))
    qa = tmp_path / "MME/MME_Benchmark_release_version/existence/existence_0001.txt"
    qa.write_text("a question without its answer\n", encoding="utf-8")
    with pytest.raises(PdropEvalError, match="existence_0001.txt line 1 is not `question<TAB>answer`"):
        load_fixture_task("mme", tmp_path)


def test_hf_mme_rebuilds_llavas_prompt_and_numbers_the_two_questions(tmp_path):
    expected = write_hf_mme(tmp_path / "hf/lmms-lab/MME")
    samples = load_fixture_task("mme", tmp_path)
    assert [s.id for s in samples] == expected["ids"]
    assert [s.prompt for s in samples] == expected["prompts"]
    assert [s.gold for s in samples] == expected["gold"]
    assert [s.meta["category"] for s in samples] == expected["categories"]
    assert samples[2].prompt == "Is there a red scarf in the image?\nAnswer the question using a single word or phrase."
    assert samples[0].meta["image"] == samples[1].meta["image"] == "code_reasoning/code_reasoning_0001.png"
    assert samples[5].load_image().mode == "RGB"


def test_llava_seed_keeps_image_questions_joined_to_the_official_annotations(tmp_path):
    expected = write_llava_seed(tmp_path)
    samples = load_fixture_task("seedbench", tmp_path)
    assert [s.id for s in samples] == expected["ids"]
    assert [s.gold for s in samples] == expected["gold"]
    assert [s.prompt for s in samples] == expected["prompts"]
    assert [s.meta["question_type"] for s in samples] == expected["types"]
    assert [s.meta["question_id"] for s in samples] == ["101669", "49914", "49914"]
    assert samples[0].question == "How many towels are in the image?\nA. One\nB. Two\nC. Three\nD. Four"
    assert samples[1].image_source.endswith("seed_bench/SEED-Bench-image/2371455_1084942364.jpg")
    assert samples[2].load_image().mode == "RGB"


def test_llava_seed_row_missing_from_the_annotations_is_an_error(tmp_path):
    write_llava_seed(tmp_path)
    path = tmp_path / "seed_bench/SEED-Bench.json"
    data = json.loads(path.read_text())
    data["questions"] = [q for q in data["questions"] if q["question_id"] != "101669"]
    path.write_text(json.dumps(data))
    with pytest.raises(PdropEvalError, match="SEED-Bench row '101669'"):
        load_fixture_task("seedbench", tmp_path)


def test_hf_seed_drops_video_rows_and_reads_the_first_frame(tmp_path):
    expected = write_hf_seed(tmp_path / "hf/lmms-lab/SEED-Bench")
    samples = load_fixture_task("seedbench", tmp_path)
    assert [s.id for s in samples] == expected["ids"]
    assert [s.gold for s in samples] == expected["gold"]
    assert [s.prompt for s in samples] == expected["prompts"]
    assert [s.meta["question_type"] for s in samples] == [
        "Instances Counting",
        "Scene Understanding",
        "Instance Attributes",
    ]
    assert samples[0].load_image().mode == "RGB"


def test_llava_layout_is_preferred_over_the_hf_copy(tmp_path):
    write_hf_seed(tmp_path / "hf/lmms-lab/SEED-Bench")
    expected = write_llava_seed(tmp_path)
    assert [s.id for s in load_fixture_task("seedbench", tmp_path)] == expected["ids"]
