"""Prompt templates and LLaVA's chunked tokenisation around the image placeholder.

LLaVA's evaluation tokenises each text chunk between `<image>` markers on its own and drops the BOS of later
chunks. With a non-legacy Llama tokenizer this keeps a `▁` in front of the `\\n` after the image, which tokenising
the whole string would drop; matching the official ids token for token needs the chunked form.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from pdrop_eval.errors import PdropEvalError

IMAGE_PLACEHOLDER = "<image>"

TEMPLATES: dict[str, str] = {
    "vicuna_v1": (
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions. USER: <image>\n{text} ASSISTANT:"
    ),
    "mistral_instruct": "[INST] <image>\n{text} [/INST]",
}


def format_prompt(template: str, text: str) -> str:
    """Put the user's message into the template; the message is inserted verbatim (no str.format on user text)."""
    if template not in TEMPLATES:
        raise PdropEvalError(f"unknown prompt template {template!r}; choose one of {sorted(TEMPLATES)}")
    before, after = TEMPLATES[template].split("{text}")
    return before + text + after


def tokenize_with_images(
    tokenizer: PreTrainedTokenizerBase, prompt: str, image_token_id: int, image_token_counts: list[int]
) -> list[int]:
    """Token ids of `prompt` with the k-th `<image>` replaced by `image_token_counts[k]` copies of the image id."""
    chunks = prompt.split(IMAGE_PLACEHOLDER)
    if len(chunks) - 1 != len(image_token_counts):
        raise PdropEvalError(
            f"prompt has {len(chunks) - 1} {IMAGE_PLACEHOLDER} markers but {len(image_token_counts)} images were given"
        )
    bos = tokenizer.bos_token_id
    ids: list[int] = []
    for index, chunk in enumerate(chunks):
        chunk_ids = tokenizer(chunk, add_special_tokens=True).input_ids
        if index > 0:
            if chunk_ids and chunk_ids[0] == bos:
                chunk_ids = chunk_ids[1:]
            ids.extend([image_token_id] * image_token_counts[index - 1])
        ids.extend(chunk_ids)
    return ids
