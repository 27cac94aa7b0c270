"""The synthetic shapes task: deterministic, answerable from the drawing, independent of the sample count."""

from __future__ import annotations

from pdrop_eval.data.request import LoadRequest
from pdrop_eval.data.synthetic import COLORS, load_shapes, make_scene
from pdrop_eval.registry import get_task, load_samples


def _shapes(**options):
    return load_shapes(LoadRequest(paths={}, options=options, prompt_suffix="\nS"))


def test_same_seed_same_samples_and_pixels():
    first, again = _shapes(count=12, seed=5), _shapes(count=12, seed=5)
    assert [(s.prompt, s.gold) for s in first] == [(s.prompt, s.gold) for s in again]
    assert first[4].load_image().tobytes() == again[4].load_image().tobytes()
    assert [s.gold for s in _shapes(count=12, seed=6)] != [s.gold for s in first]


def test_sample_i_does_not_depend_on_count():
    assert [s.gold for s in _shapes(count=5)] == [s.gold for s in _shapes(count=30)][:5]


def test_answers_follow_from_the_scene():
    for index in range(60):
        scene = make_scene(1, index)
        if scene.kind == "color":
            target = scene.question.removeprefix("What color is the ").removesuffix("?")
            matching = [shape for shape in scene.shapes if shape.kind == target]
            assert len(matching) == 1 and matching[0].color == scene.answer
        elif scene.kind == "count":
            target = scene.question.split()[2][:-1]
            assert str(sum(shape.kind == target for shape in scene.shapes)) == scene.answer
        else:
            _, _, _, color, target = scene.question.rstrip("?").split()
            present = any(shape.kind == target and shape.color == color for shape in scene.shapes)
            assert scene.answer == ("yes" if present else "no")


def test_drawn_image_shows_the_target_colour():
    sample = _shapes(count=1, image_size=48)[0]
    image = sample.load_image()
    assert image.size == (48, 48) and image.mode == "RGB"
    assert COLORS[sample.gold] in {color for _, color in image.getcolors(48 * 48)}


def test_shapes_task_card_loads():
    samples = load_samples(get_task("shapes"), limit=7)
    assert [s.id for s in samples] == list(range(7))
    assert samples[0].prompt == samples[0].question + "\nAnswer the question using a single word or phrase."
    assert samples[0].gold.islower() and " " not in samples[0].gold
