"""Read every tensor of a checkpoint directory, whichever way it was saved.

Original LLaVA checkpoints and the OpenAI CLIP repositories often ship pickled `.bin` shards. They are read with
`torch.load(weights_only=True)`, which refuses to rebuild arbitrary Python objects, so a hostile file cannot run
code; safetensors files are preferred whenever a directory has both.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from pdrop_eval.errors import PdropEvalError


def weight_files(directory: Path) -> list[Path]:
    """The checkpoint's weight files: its safetensors files if it has any, else its PyTorch `.bin` files."""
    safetensors = sorted(directory.glob("*.safetensors"))
    if safetensors:
        return safetensors
    return sorted(p for p in directory.glob("*.bin") if p.name != "training_args.bin")


def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of all shards in `directory`, on the CPU."""
    files = weight_files(directory)
    if not files:
        raise PdropEvalError(f"{directory} has no weights (*.safetensors or *.bin)")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        if file.suffix == ".safetensors":
            try:
                state.update(load_file(file, device="cpu"))
            except (OSError, SafetensorError) as error:
                raise PdropEvalError(f"cannot read {file} ({error}): the file is incomplete or damaged") from error
        else:
            try:
                state.update(torch.load(file, map_location="cpu", weights_only=True))
            except (pickle.UnpicklingError, RuntimeError) as error:
                raise PdropEvalError(f"cannot read {file} as a plain tensor checkpoint: {error}") from error
    return state
