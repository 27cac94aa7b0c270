"""Every registered task builds its prompt on every model family that has its own chat format (issue 12 item 5):
one fixture per task in an official on-disk format (tests/fixtures_data.py), two of its samples, the task's own
prompt (question + the card's suffix) inside the family's turn, each image's run as long as the model makes it,
ids that decode back to exactly that text."""

import functools

import pytest

from pdrop_eval.families import llava_onevision, qwen2_5_vl
from pdrop_eval.models import build_batch, image_token_count, load_vlm
from pdrop_eval.registry import available_tasks
from tests.fixtures_data import TASK_FIXTURE_WRITERS, load_fixture_task

pytestmark = pytest.mark.engine  # also on the oldest supported transformers (make test-compat)

# The prompt text each family's evaluation builds around a message, with its image run `count` tokens long.
EXPECTED_PROMPT = {
    "tiny-qwen2.5-vl": qwen2_5_vl.chat_prompt,
    "tiny-llava-onevision": lambda message, count: llava_onevision.chat_prompt(message).replace(
        "<image>", "<image>" * count
    ),
}


@functools.cache
def _loaded(name: str):
    return load_vlm(name)


def test_every_registered_task_has_a_fixture_here():
    assert set(TASK_FIXTURE_WRITERS) == set(available_tasks())


@pytest.mark.parametrize("model", sorted(EXPECTED_PROMPT))
@pytest.mark.parametrize("task", sorted(TASK_FIXTURE_WRITERS))
def test_every_task_prompt_builds_on_the_family(model, task, tmp_path):
    TASK_FIXTURE_WRITERS[task](tmp_path)
    samples = load_fixture_task(task, tmp_path, limit=2)
    assert samples
    loaded = _loaded(model)
    images = [sample.load_image() for sample in samples]
    batch = build_batch(loaded, [sample.prompt for sample in samples], images)
    for row, (sample, image) in enumerate(zip(samples, images)):
        count = image_token_count(loaded, image)
        assert batch.image_token_counts[row] == count
        ids = batch.input_ids[row][batch.attention_mask[row].bool()]
        assert loaded.tokenizer.decode(ids) == EXPECTED_PROMPT[model](sample.prompt, count)
