"""VisionZip (Yang et al., CVPR'25): dominant and contextual visual tokens, chosen inside the vision tower.

Official code: dvlab-research/VisionZip@3151f6d — visionzip/main.py `visionzip` (dominant=54, contextual=10 in the
README for 64 tokens; `dominant` counts the CLS token), visionzip/utils.py `CLIPAttention_forward` (returns the
layer's keys averaged over heads as the merge metric) and `apply_info` (the metric is kept at layer 22 of 24),
visionzip/clip_encoder.py `CLIPVisionTower_VisionZip.forward` (the selection), visionzip/llava_arch.py
`encode_images_visionzip` (the projector runs on the selected tokens only).

Exact semantics, per image, at the tower layer f whose output is LLaVA's feature layer (`vision_feature_layer`
−2: f = 22 of 24 layers), with X = that output including the CLS token (no post-layernorm) and n = layer_norm1(input
of layer f):
- dominant: the CLS row of layer f's softmax attention, q = q_proj(n)·scale (scaled before the product, as the
  official eager forward does), k = k_proj(n), softmax over all keys, SUMMED over heads, over the patches; the top
  `dominant − 1` patches and the CLS token, in ascending position (CLS first);
- contextual: metric = k_proj(n) (bias included) averaged over heads, [L, head_dim]; over the M remaining tokens in
  ascending position, normalised (no epsilon), targets = positions `arange(0, M, max(1, M // contextual))[:contextual]`;
  every other remaining token goes to the target of highest cosine similarity (argmax: first on ties); a
  contextual token = the target's X + the mean of the X assigned to it (a target with none keeps its X), summed
  through the one-hot matrix product the official code uses;
- `cat(dominant, contextual)` goes through the projector; the prompt then holds that many image tokens, with
  positions as if it had been built with that many placeholders (pdrop_eval.pyramid.vlm.resize_image_spans).

Where we differ, and why:
- only the CLS query row of layer f's attention is computed (the official code materialises every row through
  `output_attentions`); the row is the same, and the tower runs unmodified (any attention kernel);
- `contextual = 0` keeps no contextual token (the official code divides by it and stops);
- LLaVA-NeXT's anyres path (the official `restore_image_features_sorted`, hard-wired to 24×24 crops) is not
  implemented: such inputs are refused with one line.
Because the CLS token always enters the LLM, no setting reproduces the unpruned model (which drops CLS); keeping
every token gives the unpruned prompt plus the projected CLS token first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.methods.base import PruningMethod, ReducedFeatures

if TYPE_CHECKING:
    from pdrop_eval.methods.budgets import ModelGeometry, SweepSettings
    from pdrop_eval.pyramid.engine import SampleTrace
    from pdrop_eval.pyramid.flops import ModelShape


@dataclass(frozen=True)
class TowerLayerView:
    """Layer f of the tower as VisionZip reads it, for a batch of images."""

    features: torch.Tensor  # [B, L, d] output of layer f, CLS first
    cls_attention: torch.Tensor  # [B, L - 1] CLS row over the patches, summed over heads
    metric: torch.Tensor  # [B, L, head_dim] keys averaged over heads


def feature_layer_index(num_layers: int, vision_feature_layer: int) -> int:
    """The tower layer whose output is `hidden_states[vision_feature_layer]` (hidden_states[0] is the input)."""
    index = vision_feature_layer % (num_layers + 1) - 1
    if index < 0:
        raise PdropEvalError(
            f"VisionZip reads a tower layer, but vision_feature_layer {vision_feature_layer} selects the embeddings"
        )
    return index


def encoder_layers(tower: nn.Module) -> nn.ModuleList:
    """The CLIP encoder's layers (transformers 5 puts the encoder on the vision model itself, 4.x one level down)."""
    return getattr(tower, "vision_model", tower).encoder.layers


@torch.no_grad()
def read_tower_layer(tower: nn.Module, pixel_values: torch.Tensor, vision_feature_layer: int) -> TowerLayerView:
    """Runs the CLIP tower and reads layer f's output, its CLS attention row and its head-averaged keys."""
    output = tower(pixel_values, output_hidden_states=True)
    layers = encoder_layers(tower)
    index = feature_layer_index(len(layers), vision_feature_layer)
    layer = layers[index]
    attention = layer.self_attn
    normed = layer.layer_norm1(output.hidden_states[index])
    batch, length, _ = normed.shape
    heads, head_dim = attention.num_heads, attention.head_dim
    query = (attention.q_proj(normed[:, :1]) * attention.scale).view(batch, heads, 1, head_dim)
    key = attention.k_proj(normed).view(batch, length, heads, head_dim)
    logits = torch.matmul(query, key.permute(0, 2, 3, 1))  # [B, H, 1, L]
    weights = logits.softmax(dim=-1, dtype=torch.float32).to(normed.dtype)
    return TowerLayerView(
        features=output.hidden_states[index + 1],
        cls_attention=weights[:, :, 0, 1:].sum(dim=1),
        metric=key.mean(dim=2),
    )


def zip_tokens(view: TowerLayerView, row: int, dominant: int, contextual: int) -> tuple[torch.Tensor, list[int]]:
    """One image's dominant tokens (CLS first) then contextual tokens [K, d], and the dominant positions."""
    features, metric = view.features[row], view.metric[row]
    length = features.shape[0]
    top = view.cls_attention[row].topk(dominant - 1).indices + 1
    is_dominant = torch.zeros(length, dtype=torch.bool, device=features.device)
    is_dominant[0] = True
    is_dominant[top] = True
    kept = [features[is_dominant]]
    remaining, remaining_metric = features[~is_dominant], metric[~is_dominant]
    count = remaining.shape[0]
    if contextual > 0 and count > 0:
        unit = remaining_metric / remaining_metric.norm(dim=-1, keepdim=True)
        targets = torch.arange(0, count, max(1, count // contextual), device=features.device)[:contextual]
        is_target = torch.zeros(count, dtype=torch.bool, device=features.device)
        is_target[targets] = True
        choice = (unit[~is_target] @ unit[targets].T).argmax(dim=-1)
        assign = torch.zeros(choice.shape[0], targets.shape[0], dtype=features.dtype, device=features.device)
        assign[torch.arange(choice.shape[0], device=features.device), choice] = 1
        sums = assign.T @ remaining[~is_target]
        kept.append(remaining[targets] + sums / assign.sum(dim=0).clamp(min=1)[:, None])
    return torch.cat(kept), is_dominant.nonzero().flatten().tolist()


@dataclass(frozen=True)
class VisionZip(PruningMethod):
    """`dominant` counts the CLS token, as the official `visionzip(model, dominant, contextual)` does."""

    name = "visionzip"
    display_name = "VisionZip"
    reads_tower: ClassVar[bool] = True
    marker: ClassVar[str] = "^"

    dominant: int = 54
    contextual: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        for setting, low in (("dominant", 1), ("contextual", 0)):
            value = getattr(self, setting)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise PdropEvalError(
                    f"VisionZip {setting}={value!r} must be a whole number >= {low} "
                    "(dominant counts the CLS token: 54 dominant + 10 contextual = 64 tokens)"
                )

    @classmethod
    def check_model(cls, geometry: ModelGeometry) -> None:
        if not geometry.cls_token:
            raise PdropEvalError(
                "VisionZip ranks patches by the vision tower's CLS attention, and this model's tower (SigLIP, "
                "LLaVA-OneVision) has no CLS token: leave visionzip out of --methods and --baselines for this model"
            )
        if geometry.anyres:
            raise PdropEvalError(
                "VisionZip is implemented for LLaVA-1.5-style models (one 24×24 crop per image), not LLaVA-NeXT's "
                "anyres crops: drop visionzip from --methods for this model"
            )

    @classmethod
    def for_budget(cls, budget: float, geometry: ModelGeometry, sweep: SweepSettings) -> tuple[VisionZip, ...]:
        """K tokens split as the paper's LLaVA-1.5 settings: dominant = round(K · 54/64) (CLS included),
        contextual = K − dominant: 64 → 54 + 10 (the official README's `visionzip(model, 54, 10)`), 128 → 108 + 20
        (the default of Fanziyang-v's port of visionzip/main.py), 192 → 162 + 30."""
        count = round(budget)
        dominant = max(1, round(count * 54 / 64))
        return (cls(dominant=dominant, contextual=count - dominant),)

    @property
    def label(self) -> str:
        return f"visionzip_d{self.dominant}_c{self.contextual}"

    def kept_features(self, num_features: int) -> int:
        if self.dominant - 1 > num_features:
            raise PdropEvalError(
                f"VisionZip dominant={self.dominant} keeps more patches than the image's {num_features} "
                f"(plus CLS): choose dominant of at most {num_features + 1}"
            )
        remaining = num_features + 1 - self.dominant
        return self.dominant + min(self.contextual, remaining)

    def encode_images(
        self, model: nn.Module, pixel_values: torch.Tensor, image_sizes: torch.Tensor | None
    ) -> ReducedFeatures:
        if image_sizes is not None:
            raise PdropEvalError(
                "VisionZip is implemented for LLaVA-1.5-style models (one 24×24 CLIP crop per image); anyres crops are "
                "not supported (LLaVA-NeXT, and LLaVA-OneVision, whose SigLIP tower has no CLS token either)"
            )
        config = model.config
        view = read_tower_layer(model.model.vision_tower, pixel_values, config.vision_feature_layer)
        self.kept_features(view.features.shape[1] - 1)
        projector = model.model.multi_modal_projector
        features, indices = [], []
        for row in range(view.features.shape[0]):
            tokens, dominant_positions = zip_tokens(view, row, self.dominant, self.contextual)
            features.append(projector(tokens))
            indices.append([position - 1 for position in dominant_positions[1:]])
        return ReducedFeatures(features=features, kept_indices=indices)

    def projected_tokens(self, trace: SampleTrace) -> int | None:
        return trace.image_tokens_per_layer[0]

    def overhead_flops(self, shape: ModelShape, trace: SampleTrace) -> int:
        """Layer f re-read for the CLS query row and all keys, the CLS score row, the cosine similarities of the
        merged tokens to the targets, and the one-hot sum that merges them."""
        vision = shape.vision
        length, width = vision.tokens, vision.hidden
        head_dim = width // vision.heads
        remaining = length - self.dominant
        targets = min(self.contextual, remaining)
        merged = remaining - targets
        read = 2 * width * width + 2 * length * width * width + 2 * length * width
        return read + 2 * merged * targets * head_dim + 2 * targets * merged * width

    def record(self) -> dict:
        return {**super().record(), "dominant": self.dominant, "contextual": self.contextual}
