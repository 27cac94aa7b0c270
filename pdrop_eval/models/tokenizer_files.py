"""Load a checkpoint's tokenizer offline, including the SentencePiece-only tokenizers of Vicuna-based checkpoints.

Original-format LLaVA checkpoints (liuhaotian/llava-v1.5-7b, PDrop-trained ones) ship their Vicuna tokenizer only
as `tokenizer.model` plus a `tokenizer_config.json` naming `LlamaTokenizer`. transformers 5.x has no slow
tokenizers: it converts the SentencePiece model to a `tokenizers` BPE on load (`SentencePieceExtractor`, which
needs the sentencepiece and protobuf packages). When those are missing it does not say so: it falls back to reading
the file as a tiktoken vocabulary and fails with a message about tiktoken. So the packages are checked first.

The converted tokenizer gives LLaVA's ids: on every chunk LLaVA's evaluation tokenises (text between `<image>`
markers) it equals the slow sentencepiece `LlamaTokenizer(legacy=False)` that LLaVA's own loader builds
(haotian-liu/LLaVA@04fb03d llava/model/builder.py:load_pretrained_model, `use_fast=False`; transformers 4.37.2,
LLaVA's pin). Measured with a Llama-style SentencePiece model over 333 strings on transformers 4.37.2 (slow),
5.17.0 and 5.24.0: the only difference is a chunk that itself starts with a space (slow keeps one more `▁`),
which no prompt template here produces (tests/test_models_original_spm.py).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from transformers import AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

from pdrop_eval.errors import PdropEvalError

SENTENCEPIECE_FILE = "tokenizer.model"
FAST_TOKENIZER_FILE = "tokenizer.json"
INSTALL_HINT = "pip install sentencepiece protobuf"
_CONVERSION_MODULES = {"sentencepiece": "sentencepiece", "google.protobuf": "protobuf"}


def load_tokenizer(path: Path, config: PretrainedConfig | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer in `path`, local files only and no remote code; `config` where AutoConfig cannot read it."""
    if needs_sentencepiece(path):
        _require_conversion_packages(path)
    extra = {"config": config} if config is not None else {}
    return AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False, **extra)


def needs_sentencepiece(path: Path) -> bool:
    """A `tokenizer.json` is read by `tokenizers` alone; only a bare `tokenizer.model` must be converted."""
    return (path / SENTENCEPIECE_FILE).is_file() and not (path / FAST_TOKENIZER_FILE).is_file()


def _require_conversion_packages(path: Path) -> None:
    missing = [package for module, package in _CONVERSION_MODULES.items() if not _importable(module)]
    if missing:
        raise PdropEvalError(
            f"{path} has its tokenizer only as a SentencePiece {SENTENCEPIECE_FILE} (no {FAST_TOKENIZER_FILE}); "
            f"reading it needs the {' and '.join(missing)} package{'s' if len(missing) > 1 else ''}: {INSTALL_HINT}"
        )


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package (`google`) or a module stubbed out as None
        return False
