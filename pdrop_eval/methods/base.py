"""The one interface every pruning method implements, so the engine, FLOPs and records never name a method.

A method is a frozen dataclass: its settings are its fields, so a method value is hashable, comparable and passed
per call (never stored on the model), and one loaded model serves a whole sweep. It acts at two places, each with a
default that leaves the tokens alone:

- before the LLM, `reduce_features` maps each image's projected features [N_i, d] to [K_i, d]; the prompt then
  holds K_i image tokens (pdrop_eval.pyramid.vlm resizes the placeholder span). A method that must read the
  tower's internals (VisionZip) sets `reads_tower` and implements `encode_images` instead: it then gets the
  pixels, not the features the rest of a sweep shares (`runs_tower` says so per model: downsample needs the pixels
  only on LLaVA-NeXT, whose packed features no longer hold each tile's grid);
- inside the LLM, after each layer count in `stage_layers`, `score` rates every token of the current sequence and
  the engine keeps each sample's top `keep_count` image tokens (ties broken as the official top-k does).

Sweeps and reports ask the class, never a name: `baseline` gives its settings for `--baselines`, `for_budget` its
settings for a budget of image tokens as its paper sets them (`--methods … --budget …`, see budgets.py),
`check_model` refuses a model it cannot run on before anything loads, and `marker`, `describe` and `paper_rows`
are how a report draws it, names it and finds it in a paper's table.

`overhead_flops` is what the method itself costs beyond the layers the engine runs (ranking projections, similarity
matrices), so the exact FLOPs count every method the same way. Capabilities live on this interface with defaults;
the engine holds no `isinstance` or name checks (the lesson of NVIDIA/kvpress's presses).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from torch import nn

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.families.positions import RotaryFunction

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pandas as pd

    from pdrop_eval.methods.budgets import ModelGeometry, SweepSettings
    from pdrop_eval.pyramid.engine import SampleTrace
    from pdrop_eval.pyramid.flops import ModelShape

PositionMode = Literal["compact", "original"]
POSITION_MODES: tuple[str, ...] = ("compact", "original")


@dataclass(frozen=True)
class Boundary:
    """What a method sees at a stage boundary inside the LLM, after `layer` decoder layers ran.

    Tensors are [B, L, ...] LEFT padded, so column -1 is every sample's last prompt token.
    """

    stage: int
    layer: int
    layers: nn.ModuleList
    final_norm: nn.Module  # the decoder's last norm (DART compares hidden states through it)
    hidden: torch.Tensor  # [B, L, d] output of layer `layer - 1`, the input of layer `layer`
    last_input: torch.Tensor  # [B, L, d] input of layer `layer - 1`, the layer that just ran
    position_embeddings: tuple[torch.Tensor, torch.Tensor]  # (cos, sin) of the current positions
    rotary: RotaryFunction  # the model family's rotary rule, so a score rotates q/k as the layer will
    valid: torch.Tensor  # [B, L] bool, False for padding
    image_mask: torch.Tensor  # [B, L] bool, image tokens still present
    image_ordinal: torch.Tensor  # [B, L] long, each image token's index among its sample's original ones, -1 else
    original_image_counts: list[int]  # per sample, image tokens that entered the LLM
    sample_seeds: list[int]  # per sample, a seed that does not depend on the batch it lands in
    prepared: object = None  # what the method's `prepare` returned (its `state`), None when it prepares nothing


@dataclass(frozen=True)
class Prepared:
    """What a method reads once from the LLM's input, before layer 0 (SparseVLM's text raters).

    `state` is handed back in every Boundary; `sample_counts[b]` are the sizes its FLOPs depend on (the number of
    raters), stored on sample b's trace so `overhead_flops` can count them.
    """

    state: object
    sample_counts: list[dict[str, int]]


@dataclass(frozen=True)
class ReducedFeatures:
    """Per image, the features that enter the LLM and, where a method selects tower features, which ones: ascending
    ordinals in the method's `kept_index_space` (VisionZip lists its dominant patches, its contextual tokens being
    merges)."""

    features: list[torch.Tensor]
    kept_indices: list[list[int]] | None = None


@dataclass(frozen=True)
class PruningMethod:
    """Base of every method; the defaults describe the unpruned model."""

    name: ClassVar[str]  # the registry key and the `method` column of results
    display_name: ClassVar[str]  # how reports and legends name it
    default_positions: ClassVar[str] = "compact"
    reads_tower: ClassVar[bool] = False  # True: `encode_images` replaces the shared tower pass
    takes_budget: ClassVar[bool] = True  # False: a budget does not apply (the unpruned model runs once)
    marker: ClassVar[str] = "s"  # matplotlib marker of its points in the report
    # what `kept_feature_indices` count: "tokens", the image's tokens as the family packs them (LLaVA-NeXT: base
    # grid, unpadded tiles, newline tokens), or "crops", the tower's patches crop by crop (`crop · P + patch`, base
    # view first), for a method that selects inside each crop; the two agree where an image is one crop of patches
    kept_index_space: ClassVar[str] = "tokens"

    positions: PositionMode = "compact"

    def __post_init__(self) -> None:
        if self.positions not in POSITION_MODES:
            raise PdropEvalError(
                f"unknown position mode {self.positions!r}: use 'compact' (official PDrop) or 'original' (FastV)"
            )

    @property
    def label(self) -> str:
        """A short stable name: predictions are stored under it, so it never changes for the same settings."""
        raise NotImplementedError

    @property
    def drops(self) -> bool:
        """Whether the method removes any image token at all."""
        return True

    @property
    def stage_layers(self) -> tuple[int, ...]:
        """Layer counts after which `score` runs and tokens are dropped ("8" = after 8 decoder layers); () if none."""
        return ()

    def kept_features(self, num_features: int, crops: int = 1) -> int:
        """Image tokens entering the LLM for an image whose tower gives `num_features` (before-the-LLM methods), over
        `crops` equal crops for a method that reduces each crop on its own (LLaVA-NeXT's budgets count 5 × 576)."""
        return num_features

    def reduce_features(self, features: list[torch.Tensor]) -> ReducedFeatures:
        """Before the LLM: per image, its projected features [N_i, d] → [K_i, d]. Default: unchanged."""
        return ReducedFeatures(features=list(features))

    def runs_tower(self, model: nn.Module) -> bool:
        """Whether `encode_images` replaces the shared tower pass on this model (default: `reads_tower`)."""
        return self.reads_tower

    def encode_images(
        self, model: nn.Module, pixel_values: torch.Tensor, image_sizes: torch.Tensor | None
    ) -> ReducedFeatures:
        """For methods whose `runs_tower` is true: the tower, the method's choice and the projector, from the pixels."""
        raise NotImplementedError(f"{type(self).__name__} sets reads_tower but has no encode_images()")

    def projected_tokens(self, trace: SampleTrace) -> int | None:
        """Tokens the projector ran on for this sample; None when it ran on every patch of every crop."""
        return None

    def keep_count(self, num_image_tokens: int, stage: int) -> int:
        """Image tokens a sample keeps after `stage`, from the count that entered the LLM."""
        return num_image_tokens

    def prepare(self, inputs_embeds: torch.Tensor, valid: torch.Tensor, image_mask: torch.Tensor) -> Prepared | None:
        """Once per prefill, before layer 0, from the LLM's input [B, L, d] (left padded): what later boundaries need
        from tokens the layers will have changed. Only asked when the method has `stage_layers`. Default: nothing."""
        return None

    def added_count(self, num_image_tokens: int, stage: int) -> int:
        """Tokens `recycle` adds after `stage` for a sample that entered the LLM with `num_image_tokens`."""
        return 0

    def recycle(self, boundary: Boundary, scores: torch.Tensor, keep: torch.Tensor) -> list[torch.Tensor] | None:
        """Per sample, tokens [M_b, d] to insert right after its kept image tokens at this boundary; they count as
        image tokens in later layers (SparseVLM v1.5 merges deleted tokens into them). `scores` is what `score`
        gave, `keep` the [B, L] image tokens kept. Default: nothing added."""
        return None

    def score(self, boundary: Boundary) -> torch.Tensor:
        """[B, L] scores at a stage boundary; higher is kept. Only methods with `stage_layers` are asked."""
        raise NotImplementedError(f"{type(self).__name__} has stage layers but no score()")

    def overhead_flops(self, shape: ModelShape, trace: SampleTrace) -> int:
        """Real FLOPs (2 per multiply-accumulate) the method spends choosing tokens, for one sample."""
        return 0

    def validate_for_depth(self, num_layers: int) -> None:
        """Refuse layers the model does not have; scoring after k layers may read layer k, so it must exist."""
        for layer in self.stage_layers:
            if layer >= num_layers:
                raise PdropEvalError(
                    f"drop layer {layer} is beyond the model's depth: it has {num_layers} decoder layers, so drop "
                    f"layers must be between 1 and {num_layers - 1}"
                )

    def stage_ranges(self, num_layers: int) -> list[tuple[int, int]]:
        """Half-open layer ranges [start, end) between drops; a single range when nothing drops inside the LLM."""
        return list(itertools.pairwise([0, *self.stage_layers, num_layers]))

    @classmethod
    def baseline(cls, sweep: SweepSettings) -> tuple[PruningMethod, ...]:
        """What `--baselines NAME` runs: the method at its paper's default settings."""
        return (cls(),)

    @classmethod
    def for_budget(cls, budget: float, geometry: ModelGeometry, sweep: SweepSettings) -> tuple[PruningMethod, ...]:
        """The settings that keep `budget` image tokens as the method's paper sets them (several where the sweep
        gives several layer lists); a budget the method cannot reach is one PdropEvalError line."""
        raise PdropEvalError(
            f"{cls.display_name} has no budget mapping yet: run it with --baselines {cls.name} (its default "
            "settings), or give it a for_budget()"
        )

    @classmethod
    def check_model(cls, geometry: ModelGeometry) -> None:
        """Refuse, before the model loads, a model the method cannot run on at all (default: any model)."""

    @classmethod
    def describe(cls, row: Mapping) -> str:
        """How a legend or caption names a result row (its `method`, `layers`, `ratios`, `lam`, `positions`,
        `schedule` = label): by default the display name and the label, which names every setting."""
        return f"{cls.display_name} ({row['schedule']})"

    @classmethod
    def paper_rows(cls, paper_name: str, rows: pd.DataFrame, num_layers: int | None) -> pd.DataFrame | None:
        """Our rows that measure what a paper's table calls `paper_name` (lower-cased), best first; None when the
        name is not this method's. By default a name equal to the method's own matches its rows."""
        if paper_name not in (cls.name, cls.display_name.lower()):
            return None
        return rows[rows["method"] == cls.name]

    def record(self) -> dict:
        """How the method is described in metrics.json and prediction files (the report reads these keys)."""
        return {
            "label": self.label,
            "method": self.name,
            "lam": None,
            "layers": list(self.stage_layers),
            "ratios": [],
            "positions": self.positions,
        }


def format_number(value: float) -> str:
    """Numbers in labels: short and stable (0.5, 0.333333), so file names stay the same across runs."""
    return f"{value:.6g}"
