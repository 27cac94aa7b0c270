"""A small Llama-style tokenizer trained offline, so tests never need downloaded weights or vocabularies.

It reproduces the behaviour of the real LLaVA tokenizer that matters for evaluation: SentencePiece-like BPE with
a `▁` Metaspace prefix on the first piece only (non-legacy, the transformers 5.x default), byte fallback for
characters it has not seen (so `\\n` becomes `<0x0A>` as in Llama), BOS added, and `<image>`/`<pad>` as added
special tokens after the trained vocabulary, like llava-hf's ids 32000/32001.
"""

from __future__ import annotations

import json

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AddedToken, LlamaTokenizer

from pdrop_eval.models.prompts import TEMPLATES

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")
BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))
IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<pad>"
VOCAB_SIZE = 1024

_BENCHMARK_TEXT = """
Answer the question using a single word or phrase.
Answer with the option's letter from the given choices directly.
Reference OCR token: STOP, EXIT, OPEN, SALE, 2023
Is there a cat in the image? Is there a dog in the image? Is there a person in the image?
What color is the car? What colour is the ball? What shape is the sign? How many people are there?
How many cats, dogs, birds, cars, apples and boxes can you count? Which object is on the left of the table?
What is written on the board? What is the title of the chart? What is the value for 2019 in the graph?
Hint: Select the best answer. Question: Which of these is a circle? Options: A. red B. green C. blue D. yellow
yes no Yes No maybe unknown not none
red orange yellow green blue purple pink brown black white gray grey gold silver
circle square triangle rectangle star oval diamond heart cube sphere cylinder cone line dot
zero one two three four five six seven eight nine ten eleven twelve many few several some all
0 1 2 3 4 5 6 7 8 9 10 11 12 20 50 100 percent %
small large big tiny tall short left right top bottom middle center above below next to behind front
the a an of in on at to with and or is are was were there this that these those it its it's
The image shows a red circle and a blue square on a white background.
There are three green triangles and two yellow stars in the picture.
A man is riding a bicycle next to a black dog on the street.
"""


def training_corpus() -> list[str]:
    """Lines of text covering every prompt template and the benchmark phrasings the harness builds.

    Split on newlines so that `\\n` never enters the learned alphabet and falls back to its byte token.
    """
    template_text = "\n".join(t.replace("{text}", " ").replace(IMAGE_TOKEN, " ") for t in TEMPLATES.values())
    return [line for line in (template_text + "\n" + _BENCHMARK_TEXT).splitlines() if line.strip()]


def build_base_tokenizer() -> LlamaTokenizer:
    """Train the BPE (deterministic: same corpus, same settings) and wrap it as a transformers LlamaTokenizer.

    This is the language model's own tokenizer, as an original-format LLaVA checkpoint ships it (no `<image>`).
    """
    trained = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    trained.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=[*SPECIAL_TOKENS, *BYTE_TOKENS], show_progress=False
    )
    trained.train_from_iterator(training_corpus(), trainer)
    model_spec = json.loads(trained.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model_spec["merges"]]
    return LlamaTokenizer(
        vocab=model_spec["vocab"],
        merges=merges,
        legacy=False,
        add_bos_token=True,
        add_eos_token=False,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
    )


def build_tiny_tokenizer() -> LlamaTokenizer:
    """The base tokenizer plus `<image>` and `<pad>`, as llava-hf models ship it."""
    tokenizer = build_base_tokenizer()
    tokenizer.add_tokens(
        [
            AddedToken(IMAGE_TOKEN, special=True, normalized=False),
            AddedToken(PAD_TOKEN, special=True, normalized=False),
        ],
        special_tokens=True,
    )
    tokenizer.pad_token = PAD_TOKEN
    return tokenizer
