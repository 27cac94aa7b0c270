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
- the official NeXT path hard-wires 24×24 crops; we read the grid side from the tower.

LLaVA-NeXT (the official visionzip/llava_arch.py `prepare_inputs_labels_for_multimodal_visionzip` under
`spatial_unpad`, and `restore_image_features_sorted`): every crop (base view, then the tiles row-major) is zipped on
its own as above, with the same dominant/contextual, in one tower batch, and projected; the image then enters the
LLM as: the base crop's tokens as zipped (CLS, dominant patches, contextual); the tiles' dominant patches (CLS
excluded) in row-major order of the stitched (rows·S)×(columns·S) tile grid — no unpadding, no newline tokens —;
each tile's CLS token, tiles in order; each tile's contextual tokens, tiles in order. So an image of c crops enters
with c·(dominant + contextual) tokens. Budgets count crops as the papers do (640/320/160 of 2880 = 5 crops): K/5 per
crop split as on LLaVA-1.5 (128 → 108 + 20, 64 → 54 + 10, 32 → 27 + 5). Kept indices are crop-major tower patches
(`kept_index_space` "crops"). The official `raw_img_feature_merge = image_feature[:, -num_extra:]` with
contextual = 0 would append every token again (−0 slices all); we append none.
Because the CLS token always enters the LLM, no setting reproduces the unpruned model (which drops CLS); keeping
every token gives the unpruned prompt plus the projected CLS token first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.methods.anyres_tiles import crop_grid, is_anyres, split_crops
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


def arrange_anyres(crops: list[tuple[torch.Tensor, list[int]]], columns: int, side: int) -> torch.Tensor:
    """One LLaVA-NeXT image from its zipped crops (projected tokens [dominant + contextual, d] with CLS first, and
    the dominant patches' indices), as `restore_image_features_sorted` orders them: the base crop's tokens; the
    tiles' dominant patches in row-major order of the stitched tile grid; the tiles' CLS tokens; their contextual
    tokens."""
    (base, _), tiles = crops[0], crops[1:]
    placed = []
    for tile, (tokens, kept) in enumerate(tiles):
        tile_row, tile_column = divmod(tile, columns)
        for order, patch in enumerate(kept):
            row, column = divmod(patch, side)
            cell = (tile_row * side + row) * columns * side + tile_column * side + column
            placed.append((cell, tokens[1 + order]))
    stitched = [token for _, token in sorted(placed, key=lambda item: item[0])]
    cls_tokens = [tokens[0] for tokens, _ in tiles]
    contextual = [tokens[1 + len(kept) :] for tokens, kept in tiles]
    return torch.cat([base, torch.stack(stitched + cls_tokens), *contextual])


@dataclass(frozen=True)
class VisionZip(PruningMethod):
    """`dominant` counts the CLS token, as the official `visionzip(model, dominant, contextual)` does."""

    name = "visionzip"
    display_name = "VisionZip"
    reads_tower: ClassVar[bool] = True
    marker: ClassVar[str] = "^"
    kept_index_space: ClassVar[str] = "crops"

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

    @classmethod
    def for_budget(cls, budget: float, geometry: ModelGeometry, sweep: SweepSettings) -> tuple[VisionZip, ...]:
        """K tokens per crop (K / 5 on LLaVA-NeXT) split in the 54:10 proportion: dominant = round(K · 54/64) (CLS
        included), contextual = K − dominant: 64 → 54 + 10, 128 → 108 + 20, 192 → 162 + 30.

        Sources: the official repository (dvlab-research/VisionZip@3151f6d) states only the 64 split (README.md:
        `visionzip(model, dominant=54, contextual=10)`); its visionzip/main.py `visionzip()` defaults to
        dominant=191, contextual=30, which with `dominant` counting CLS is 221 tokens, not a budget of the paper.
        128 → 108 + 20 is the default of Fanziyang-v's port of main.py (`visionzip(model, dominant=108,
        contextual=20)`); 162 + 30 / 108 + 20 / 54 + 10 are the settings ModelTC/LightCompress lists for its VisionZip
        (configs/sparsification/methods/VisionZip/visionzip.yml, read through deepwiki's summary: the file itself is
        not in the index here). The paper's own table of splits could not be read here."""
        count = round(budget / geometry.crops)
        dominant = max(1, round(count * 54 / 64))
        return (cls(dominant=dominant, contextual=count - dominant),)

    @property
    def label(self) -> str:
        return f"visionzip_d{self.dominant}_c{self.contextual}"

    def kept_features(self, num_features: int, crops: int = 1) -> int:
        patches = num_features // crops
        if self.dominant - 1 > patches:
            raise PdropEvalError(
                f"VisionZip dominant={self.dominant} keeps more patches than the image's {patches} "
                f"(plus CLS): choose dominant of at most {patches + 1}"
            )
        remaining = patches + 1 - self.dominant
        return crops * (self.dominant + min(self.contextual, remaining))

    def encode_images(
        self, model: nn.Module, pixel_values: torch.Tensor, image_sizes: torch.Tensor | None
    ) -> ReducedFeatures:
        config = model.config
        tower = model.model.vision_tower
        if is_anyres(model):
            images = split_crops(model, pixel_values, image_sizes)
            pixel_values = torch.cat([image.crops for image in images])
        elif image_sizes is not None:
            raise PdropEvalError(
                "VisionZip reads a CLIP tower's CLS attention per crop (LLaVA-1.5, LLaVA-NeXT); this model's "
                "images come with their own grids and no CLS token: drop visionzip for it"
            )
        view = read_tower_layer(tower, pixel_values, config.vision_feature_layer)
        patches = view.features.shape[1] - 1
        self.kept_features(patches)
        projector = model.model.multi_modal_projector
        zipped = [zip_tokens(view, row, self.dominant, self.contextual) for row in range(view.features.shape[0])]
        crops = [projector(tokens) for tokens, _ in zipped]
        patch_lists = [[position - 1 for position in positions[1:]] for _, positions in zipped]
        if not is_anyres(model):
            return ReducedFeatures(features=crops, kept_indices=patch_lists)
        features, indices, start = [], [], 0
        for image in images:
            count = image.crops.shape[0]
            tiles = [(crops[i], patch_lists[i]) for i in range(start, start + count)]
            features.append(arrange_anyres(tiles, image.columns, crop_grid(view.features[0, 1:])))
            indices.append([crop * patches + patch for crop, (_, kept) in enumerate(tiles) for patch in kept])
            start += count
        return ReducedFeatures(features=features, kept_indices=indices)

    def projected_tokens(self, trace: SampleTrace) -> int | None:
        return trace.image_tokens_per_layer[0]

    def overhead_flops(self, shape: ModelShape, trace: SampleTrace) -> int:
        """Per crop: layer f re-read for the CLS query row and all keys, the CLS score row, the cosine similarities
        of the merged tokens to the targets, and the one-hot sum that merges them."""
        vision = shape.vision
        length, width = vision.tokens, vision.hidden
        head_dim = width // vision.heads
        remaining = length - self.dominant
        targets = min(self.contextual, remaining)
        merged = remaining - targets
        read = 2 * width * width + 2 * length * width * width + 2 * length * width
        return trace.vision_crops * (read + 2 * merged * targets * head_dim + 2 * targets * merged * width)

    def record(self) -> dict:
        return {**super().record(), "dominant": self.dominant, "contextual": self.contextual}
