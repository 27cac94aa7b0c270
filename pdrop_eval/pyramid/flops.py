"""What a generation cost, in two honestly labelled conventions.

- `paper`: the PyramidDrop paper's count, which reproduces every TFLOPs figure it prints: per LLM layer
  4·n·d² + 2·n²·d + 3·n·d·m multiply-accumulates with n = IMAGE tokens entering the layer; text tokens, the vision
  tower, decoding and ranking are not counted.
- `exact`: real FLOPs (2 per multiply-accumulate) of every matrix product that runs for a sample: all its tokens,
  grouped-query key/value widths, SwiGLU's three matrices, the LM head where logits are taken, the vision tower
  (every layer the HF vision model runs) and projector, the pruning method's own overhead (its
  `overhead_flops`: ranking projections, similarity matrices), and each decode step. Attention
  is counted dense (n × keys), as the SDPA math kernel computes it; elementwise work (norms, RoPE, softmax,
  activations) is left out, as torch's FlopCounterMode does, and is well under 1% of the total.

Towers come in two kinds: a fixed-size CLIP/SigLIP tower run once per crop (`VisionShape`), and Qwen2.5-VL's
windowed ViT (`WindowedVisionShape`), whose cost follows each image's own patch grid, recorded on the trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pdrop_eval.errors import PdropEvalError

if TYPE_CHECKING:
    from pdrop_eval.methods.base import PruningMethod
    from pdrop_eval.pyramid.engine import SampleTrace


@dataclass(frozen=True)
class TextShape:
    hidden: int
    ffn: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    gated_mlp: bool = True


@dataclass(frozen=True)
class VisionShape:
    hidden: int
    ffn: int
    layers: int
    image_size: int
    patch_size: int
    channels: int = 3
    heads: int = 1
    cls_token: bool = True  # CLIP runs on a CLS token besides the patches; SigLIP does not

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def tokens(self) -> int:
        """Patches plus the CLS token, where the tower has one: what every tower layer runs on."""
        return self.patches + (1 if self.cls_token else 0)


def _window_sides(length: int, window: int) -> list[int]:
    """Sides of the windows along one axis: full windows, then the remainder (HF pads the grid to whole windows
    with index -100 and drops those entries before attention, so a window holds only its real tokens)."""
    full, rest = divmod(length, window)
    return [window] * full + ([rest] if rest else [])


@dataclass(frozen=True)
class WindowedVisionShape:
    """Qwen2.5-VL's vision tower as HF runs it (transformers models/qwen2_5_vl/modeling_qwen2_5_vl.py:
    Qwen2_5_VisionTransformerPretrainedModel.forward): a Conv3d patch embed over `temporal_patch_size` frames of
    `patch_size`² pixels, `layers` blocks of attention (qkv + proj) and a SwiGLU MLP with biases
    (Qwen2_5_VLMLP: gate, up, down), then the patch merger: RMSNorm, and a two-layer MLP over each `merge`×`merge`
    group of patches concatenated (merge²·hidden → merge²·hidden → out_hidden).

    Attention runs per segment, never over padding: blocks in `full_attention_layers` attend within each frame
    (all h·w patches), the others within windows of `window_size // merge // patch_size` merged tokens a side
    (`get_vision_window_index`; edge windows are smaller, empty ones are dropped); every implementation splits
    at those boundaries (eager and SDPA loop over the segments, flash-attention uses varlen), so a window of n_w
    patches costs n_w² and nothing else.
    """

    hidden: int
    ffn: int
    layers: int
    patch_size: int
    temporal_patch_size: int
    merge: int
    window_size: int
    full_attention_layers: tuple[int, ...]
    out_hidden: int
    channels: int = 3

    def flops(self, grid: tuple[int, int, int]) -> int:
        """Real FLOPs of one image (or video) with patch grid (t, h, w), as the tower's matmuls run."""
        frames, rows, cols = grid
        d, m = self.hidden, self.merge
        patches = frames * rows * cols
        embed = 2 * patches * self.channels * self.temporal_patch_size * self.patch_size**2 * d
        linear = 2 * patches * d * (3 * d + d + 3 * self.ffn)
        side = self.window_size // m // self.patch_size
        window_rows, window_cols = _window_sides(rows // m, side), _window_sides(cols // m, side)
        # sum over windows of n_w², each window holding (rows × cols of merged tokens) · m² patches
        windowed = frames * sum(r * r for r in window_rows) * sum(c * c for c in window_cols) * m**4
        full = frames * (rows * cols) ** 2
        full_layers = sum(1 for index in self.full_attention_layers if 0 <= index < self.layers)
        attention = 2 * 2 * d * (full_layers * full + (self.layers - full_layers) * windowed)
        merged, width = patches // m**2, d * m**2
        merger = 2 * merged * width * (width + self.out_hidden)
        return embed + self.layers * linear + attention + merger


def text_shape(config) -> TextShape:
    """The language model's shape from a VLM config's `text_config`, or from a bare decoder config."""
    text_config = getattr(config, "text_config", None) or config
    heads = text_config.num_attention_heads
    return TextShape(
        hidden=text_config.hidden_size,
        ffn=text_config.intermediate_size,
        layers=text_config.num_hidden_layers,
        heads=heads,
        kv_heads=getattr(text_config, "num_key_value_heads", None) or heads,
        head_dim=getattr(text_config, "head_dim", None) or text_config.hidden_size // heads,
        vocab=text_config.vocab_size,
    )


@dataclass(frozen=True)
class ModelShape:
    text: TextShape
    vision: VisionShape | WindowedVisionShape | None = None
    projector_hidden: int | None = None

    @classmethod
    def from_config(cls, config) -> ModelShape:
        """From a LLaVA / LLaVA-NeXT config (text_config + CLIP vision_config) or a bare decoder config; a model
        family with another tower builds its shape in its own `model_shape`."""
        text = text_shape(config)
        vision_config = getattr(config, "vision_config", None)
        if vision_config is None:
            return cls(text=text)
        vision = VisionShape(
            hidden=vision_config.hidden_size,
            ffn=vision_config.intermediate_size,
            layers=vision_config.num_hidden_layers,
            image_size=vision_config.image_size,
            patch_size=vision_config.patch_size,
            channels=getattr(vision_config, "num_channels", 3),
            heads=vision_config.num_attention_heads,
        )
        return cls(text=text, vision=vision, projector_hidden=text.hidden)


def image_tokens_per_layer(method: PruningMethod, num_layers: int, num_image_tokens: int, crops: int = 1) -> list[int]:
    """Image tokens entering each layer under `method` for an image of `num_image_tokens` tower features over
    `crops` crops, from the method alone (what the engine will keep)."""
    entering = method.kept_features(num_image_tokens, crops)
    counts = []
    for stage, (start, end) in enumerate(method.stage_ranges(num_layers)):
        kept = entering
        if stage > 0:
            kept = method.keep_count(entering, stage - 1) + method.added_count(entering, stage - 1)
        counts.extend([kept] * (end - start))
    return counts


def average_retained_tokens(image_tokens: list[int]) -> float:
    """"Retain K tokens" as in-LLM pruning papers report it: the mean image tokens per layer."""
    return sum(image_tokens) / len(image_tokens)


def paper_flops(shape: TextShape, image_tokens: list[int]) -> float:
    """The paper's count in multiply-accumulates: 4nd² + 2n²d + 3ndm per layer, n = image tokens (REFERENCE §2)."""
    d, m = shape.hidden, shape.ffn
    return float(sum(4 * n * d * d + 2 * n * n * d + 3 * n * d * m for n in image_tokens))


def _layer_flops(shape: TextShape, queries: int, keys: int) -> int:
    """Real FLOPs of one decoder layer for `queries` new tokens attending over `keys` keys."""
    d, hd = shape.hidden, shape.head_dim
    q_width, kv_width = shape.heads * hd, shape.kv_heads * hd
    projections = 2 * queries * d * (q_width + 2 * kv_width) + 2 * queries * q_width * d
    attention = 2 * 2 * shape.heads * queries * keys * hd
    mlp = 2 * queries * d * shape.ffn * (3 if shape.gated_mlp else 2)
    return projections + attention + mlp


def last_query_rank_flops(shape: TextShape, keys: int) -> int:
    """Scoring by the last query row's attention: one query row projected, all keys projected, one score row per
    head (pdrop_eval.pyramid.ranking.last_query_attention)."""
    d, hd = shape.hidden, shape.head_dim
    return 2 * d * shape.heads * hd + 2 * keys * d * shape.kv_heads * hd + 2 * shape.heads * keys * hd


def vision_flops(
    vision: VisionShape, projector_hidden: int, num_crops: int, projected_tokens: int | None = None
) -> int:
    """The CLIP tower over each crop (every layer runs) plus the two-layer projector over each crop's patches
    (LLaVA-NeXT projects every crop before it unpads and packs them), or over `projected_tokens` where a method
    chose tokens inside the tower (VisionZip)."""
    n, d, patches = vision.tokens, vision.hidden, vision.patches
    embed = 2 * patches * vision.channels * vision.patch_size**2 * d
    layer = 2 * n * d * d * 4 + 2 * 2 * n * n * d + 2 * 2 * n * d * vision.ffn
    projected = num_crops * patches if projected_tokens is None else projected_tokens
    projector = 2 * projected * (d * projector_hidden + projector_hidden * projector_hidden)
    return num_crops * (embed + vision.layers * layer) + projector


@dataclass(frozen=True)
class SampleFlops:
    paper: float  # multiply-accumulates, paper convention
    exact: float  # FLOPs of everything that ran
    exact_prefill: float
    exact_decode: float
    exact_vision: float
    exact_rank: float  # the pruning method's own overhead (ranking, similarity matrices)
    retained_tokens: float
    kv_cache_bytes: int


def sample_flops(shape: ModelShape, trace: SampleTrace, kv_bytes_per_element: int = 2) -> SampleFlops:
    """Both conventions for one generated sample, from the engine's trace."""
    text = shape.text
    prefill = sum(_layer_flops(text, n, n) for n in trace.tokens_per_layer) + 2 * text.hidden * text.vocab
    rank = trace.method.overhead_flops(shape, trace)
    decode = 0
    for step in range(1, trace.generated_tokens):
        decode += sum(_layer_flops(text, 1, n + step) for n in trace.tokens_per_layer)
        decode += 2 * text.hidden * text.vocab
    vision = 0
    if isinstance(shape.vision, WindowedVisionShape):
        if trace.vision_grid is None:
            raise PdropEvalError("a windowed vision tower's FLOPs need the image's patch grid on the trace")
        vision = shape.vision.flops(trace.vision_grid)
    elif shape.vision is not None:
        projected = trace.method.projected_tokens(trace)
        vision = vision_flops(shape.vision, shape.projector_hidden or text.hidden, trace.vision_crops, projected)
    kv_cache = 2 * sum(trace.tokens_per_layer) * text.kv_heads * text.head_dim * kv_bytes_per_element
    return SampleFlops(
        paper=paper_flops(text, trace.image_tokens_per_layer),
        exact=float(prefill + rank + decode + vision),
        exact_prefill=float(prefill),
        exact_decode=float(decode),
        exact_vision=float(vision),
        exact_rank=float(rank),
        retained_tokens=average_retained_tokens(trace.image_tokens_per_layer),
        kv_cache_bytes=kv_cache,
    )
