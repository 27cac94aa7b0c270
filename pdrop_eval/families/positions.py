"""How a family numbers its tokens for rotary embedding, and how those numbers follow a drop and continue in decoding.

The engine holds no position rule of its own: it asks a `PositionScheme` for a prompt's positions, for the
survivors' positions after each drop, and for each decode step's positions, and it hands methods the scheme's
rotary function so a ranking rotates q and k exactly as the layer will. `LinearPositions` is LLaVA's (and every
1-D RoPE decoder's) rule; families with other rules (Qwen2.5-VL's 3-row M-RoPE) subclass it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from torch import nn

from pdrop_eval.errors import PdropEvalError

# rotate(attention, x, cos, sin) -> x rotated as `attention`'s own layer rotates it; x is [B, H, L, hd].
RotaryFunction = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def llama_rotary(attention: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Llama-style rotary embedding; x is [B, H, L, hd], cos/sin are [B, L, hd]."""
    return x * cos.unsqueeze(1) + _rotate_half(x) * sin.unsqueeze(1)


def module_rotary(attention: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The architecture's own `apply_rotary_pos_emb` where its modeling module has one, else Llama's rule.

    That function rotates a (q, k) pair; the partner we hand it is a single head of the same tensor, so the unused
    half of its work stays small."""
    apply = getattr(sys.modules.get(type(attention).__module__), "apply_rotary_pos_emb", None)
    if apply is None:
        return llama_rotary(attention, x, cos, sin)
    return apply(x, x[:, :1], cos, sin)[0]


def compact_positions(valid: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... over each row's real tokens (left padding gets 0): positions rebuilt over what is present."""
    return (valid.long().cumsum(-1) - 1).clamp(min=0)


class LinearPositions:
    """1-D positions, one per token ([B, L]), as LLaVA-1.5/NeXT and their Llama/Qwen2/Mistral decoders use them.

    After a drop, `compact` renumbers the survivors 0..n-1 (the official PyramidDrop code rebuilds position ids
    over the shortened sequence) and `original` keeps each survivor's prompt position (FastV's inplace variant);
    decoding continues from the survivors' count (compact) or from the prompt's length (original).
    """

    rotary: RotaryFunction = staticmethod(module_rotary)

    def prompt(self, valid: torch.Tensor) -> torch.Tensor:
        """Positions of a left-padded prompt; valid: [B, L] bool."""
        return compact_positions(valid)

    def after_drop(
        self, positions: torch.Tensor, source: torch.Tensor | None, valid: torch.Tensor, mode: str
    ) -> torch.Tensor:
        """Positions of the survivors, which the repack moved from columns `source` [B, L'] into a batch `valid`."""
        if mode == "compact":
            return compact_positions(valid)
        return positions.gather(-1, source)

    def decode_start(
        self, positions: torch.Tensor, valid: torch.Tensor, prompt_lengths: torch.Tensor, mode: str
    ) -> torch.Tensor:
        """[B] position of the first generated token for a stage whose tokens are `valid` at `positions`."""
        return valid.sum(-1) if mode == "compact" else prompt_lengths.clone()

    def decode(self, start: torch.Tensor, step: int) -> torch.Tensor:
        """Positions ([B, 1]) of decode step `step` (0 = the first token fed back in)."""
        return (start + step)[:, None]


class MultimodalPositions(LinearPositions):
    """Qwen2.5-VL's M-RoPE: three position rows (temporal, height, width), [3, B, L].

    The prompt's rows come from the model's own `get_rope_index` on the UNPRUNED prompt (the family's
    `prompt_positions`). After a drop:
    - `original` keeps each survivor's three rows, so the image keeps its 2-D layout and the text its distance from
      it; decoding continues from the prompt's largest position + 1, which is HF's "cache length + rope delta".
      This is the rule to prefer on M-RoPE: it is what the unpruned model saw for every surviving token, and it is
      Qwen2.5-VL's default (`--position-mode auto`).
    - `compact` is the official PyramidDrop rule taken literally: position ids rebuilt 0..n-1 over the shortened
      sequence (`torch.arange`), identical on the three rows, as HF gives a sequence it has no image grids for;
      decoding continues from n. It erases the image's layout, which 1-D RoPE never had. Before the first drop
      both modes are the prompt's own M-RoPE rows (unlike 1-D RoPE, where compact and original coincide there).
    The rotary rule is the architecture's own `apply_rotary_pos_emb`, which since transformers 5.17 takes cos/sin
    already recomposed to [B, L, hd] by the rotary module.
    """

    def prompt(self, valid: torch.Tensor) -> torch.Tensor:
        raise PdropEvalError("M-RoPE positions need the image grids: pass the family's prompt_positions to the engine")

    def after_drop(
        self, positions: torch.Tensor, source: torch.Tensor | None, valid: torch.Tensor, mode: str
    ) -> torch.Tensor:
        if mode == "compact":
            return compact_positions(valid)[None].expand(positions.shape[0], -1, -1)
        return positions.gather(-1, source[None].expand(positions.shape[0], -1, -1))

    def decode_start(
        self, positions: torch.Tensor, valid: torch.Tensor, prompt_lengths: torch.Tensor, mode: str
    ) -> torch.Tensor:
        """The largest position present + 1 in both modes: before any drop that is HF's cache length + rope delta
        (the modes differ only once a drop has renumbered), after a compact drop it is n."""
        return positions.masked_fill(~valid[None], -1).amax(dim=(0, 2)) + 1

    def decode(self, start: torch.Tensor, step: int) -> torch.Tensor:
        return (start + step)[None, :, None].expand(3, -1, 1)
