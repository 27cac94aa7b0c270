"""Our LLaVA-OneVision prompt is what lmms-eval 0.7.3's `llava_onevision` model builds for a one-image question.

That module imports the LLaVA-NeXT package (its conversation templates), decord and accelerate at import time,
none of which the harness installs, so its installed source is parsed instead: the default conversation is
`qwen_1_5`, the question is `<image>` + newline + context, and it becomes the user turn followed by an empty
assistant turn. The template's own text (LLaVA-NeXT's conv_qwen) is checked in tests/test_families_llava_onevision.py.
Not engine-marked: the oldest-transformers environment does not install lmms-eval.
"""

import ast
import importlib.metadata
import importlib.util
from pathlib import Path

from pdrop_eval.families.llava_onevision import TEMPLATE, chat_prompt


def _method(tree: ast.Module, class_name: str, method_name: str) -> ast.FunctionDef:
    owner = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == class_name)
    return next(node for node in owner.body if isinstance(node, ast.FunctionDef) and node.name == method_name)


def _llava_onevision_source() -> ast.Module:
    package = Path(importlib.util.find_spec("lmms_eval").origin).parent
    return ast.parse((package / "models" / "simple" / "llava_onevision.py").read_text(encoding="utf-8"))


def test_prompt_follows_lmms_eval_llava_onevision_generate_until():
    assert importlib.metadata.version("lmms-eval") == "0.7.3"
    tree = _llava_onevision_source()
    init = _method(tree, "Llava_OneVision", "__init__")
    names = [arg.arg for arg in init.args.args]
    defaults = dict(zip(names[len(names) - len(init.args.defaults) :], init.args.defaults))
    assert ast.literal_eval(defaults["conv_template"]) == TEMPLATE == "qwen_1_5"

    generate_until = _method(tree, "Llava_OneVision", "generate_until")
    built = {ast.unparse(node.value) for node in ast.walk(generate_until) if isinstance(node, ast.Assign)}
    assert "image_tokens + '\\n' + context" in built  # one image: image_tokens is DEFAULT_IMAGE_TOKEN, "<image>"
    calls = {ast.unparse(node) for node in ast.walk(generate_until) if isinstance(node, ast.Call)}
    assert {"conv.append_message(conv.roles[0], question)", "conv.append_message(conv.roles[1], None)"} <= calls

    user_turn = chat_prompt("Q").split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
    assert user_turn == "<image>" + "\n" + "Q"
    assert chat_prompt("Q").endswith("<|im_start|>assistant\n")  # the empty assistant turn
