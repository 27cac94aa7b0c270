"""DivPrune (Alvar et al., CVPR'25): keep the most diverse image tokens, chosen before the LLM.

Official code: vbdi/divprune@799e2d9, LLaVA/llava/model/llava_arch.py — `pairwise_cosine_similarity`, `DivPrune`
and its call at the end of `prepare_inputs_labels_for_multimodal` (run when LAYER_INDEX=0, SUBSET_RATIO=ratio).

Exact semantics, on one image's PROJECTED features X [N, d] (what the LLM would receive):
- keep K = `int(round(ratio · N))` tokens (Python's round, half to even); pass ratio = K/N for an exact budget;
  the default ratio 0.098 is the repository README's (and run_Divprune.sh's SUBSET_RATIO); we keep at least one
  token where ratio · N < 0.5 would leave the official code with none;
- distance D = 1 − (X/‖X‖)(X/‖X‖)ᵀ, rows normalised with no epsilon;
- first pick: argmax over tokens j of the second-smallest entry of column j of D (the smallest is j's own ≈0
  distance), i.e. the token farthest from its nearest neighbour;
- then, K−1 times: argmax over j of min over picked i of D[i, j] (max–min diversity); argmax takes the first index
  on ties, as torch.argmax does;
- the kept features are gathered in ascending original order, and positions are rebuilt 0..len-1 as if the prompt
  held K placeholders (the official code indexes the kept columns out and leaves position ids to be rebuilt).

Where we differ, and why:
- the official code prunes sample 0 only and applies its indices to the whole batch, and assumes the image starts
  at position 35 (the LLaVA-1.5 system prompt); we select per image on its own features, so any batch works;
- the official loop does not exclude tokens already picked: it can pick one again only when every remaining token
  is at a distance no larger than a picked token's distance to itself (exact duplicates), and would then keep that
  token twice; we exclude picked tokens, which gives the same set whenever the official one has no repeat.
Cost: the N×N similarity matmul, 2·N²·d FLOPs; the greedy loop is elementwise, and runs once per batch
(`max_min_diverse`), not once per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.methods.base import PruningMethod, ReducedFeatures, format_number

if TYPE_CHECKING:
    from pdrop_eval.methods.budgets import ModelGeometry, SweepSettings
    from pdrop_eval.pyramid.engine import SampleTrace
    from pdrop_eval.pyramid.flops import ModelShape


def cosine_distances(features: torch.Tensor) -> torch.Tensor:
    """[N, N] 1 − cosine similarity of the rows of `features` [N, d], rows normalised with no epsilon."""
    unit = features / features.norm(dim=1, keepdim=True)
    return 1.0 - unit @ unit.T


def max_min_diverse(images: list[torch.Tensor], keeps: list[int]) -> list[torch.Tensor]:
    """Per image, the indices (ascending) of `keeps[i]` rows of `images[i]` [N_i, d] chosen greedily by max–min
    cosine distance, for a whole batch at once.

    Each image's distance matrix is its own product (so its numbers do not depend on the batch); the greedy steps
    run on the matrices padded to the largest N, every image one row of each step, so a batch costs max(K_i) steps
    instead of ΣK_i. Padding columns hold −inf and are never picked; an image whose K_i is reached keeps stepping
    but its further picks are discarded. Every step is a min, an argmax (first index on ties) or a gather, so the
    picks equal a loop over the images one by one exactly.
    """
    count = len(images)
    if count == 0:
        return []
    sizes = [image.shape[0] for image in images]
    largest, steps = max(sizes), max(keeps)
    device = images[0].device
    distance = torch.full((count, largest, largest), float("-inf"), dtype=images[0].dtype, device=device)
    first = torch.empty(count, dtype=torch.long, device=device)
    for row, image in enumerate(images):
        own = cosine_distances(image)
        distance[row, : sizes[row], : sizes[row]] = own
        nearest = own.kthvalue(2, dim=0).values if sizes[row] > 1 else own[0]  # each token's nearest other
        first[row] = nearest.argmax()
    flat = distance.view(count * largest, largest)  # row r of image b is row b·largest + r
    row_starts = torch.arange(count, device=device) * largest
    picked = torch.empty(count, steps, dtype=torch.long, device=device)
    picked[:, 0] = first
    closest = flat.index_select(0, row_starts + first)  # a copy: gathered rows (advanced indexing is far slower)
    for step in range(1, steps):
        closest.scatter_(1, picked[:, step - 1 : step], float("-inf"))
        picked[:, step] = closest.argmax(dim=1)
        closest = torch.minimum(closest, flat.index_select(0, row_starts + picked[:, step]))
    return [picked[row, : keeps[row]].sort().values for row in range(count)]


@dataclass(frozen=True)
class DivPrune(PruningMethod):
    """`ratio` is the official SUBSET_RATIO: the fraction of each image's tokens kept (K = round(ratio · N))."""

    name = "divprune"
    display_name = "DivPrune"
    marker: ClassVar[str] = "P"

    ratio: float = 0.098

    def __post_init__(self) -> None:
        super().__post_init__()
        ratio = self.ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or math.isnan(ratio):
            raise PdropEvalError(
                f"DivPrune ratio {ratio!r} is not a number: give the fraction of tokens kept, e.g. 1/3"
            )
        if not (0.0 < ratio <= 1.0):
            raise PdropEvalError(f"DivPrune ratio {ratio} is outside (0, 1]: it is the fraction of image tokens kept")
        object.__setattr__(self, "ratio", float(ratio))

    @classmethod
    def for_budget(cls, budget: float, geometry: ModelGeometry, sweep: SweepSettings) -> tuple[DivPrune, ...]:
        """SUBSET_RATIO = K / N, so round(ratio · N) = K tokens enter every layer (192/576 = 1/3)."""
        return (cls(ratio=budget / geometry.image_tokens),)

    @property
    def label(self) -> str:
        return f"divprune_r{format_number(self.ratio)}"

    def kept_features(self, num_features: int, crops: int = 1) -> int:
        return max(1, round(self.ratio * num_features))

    def reduce_features(self, features: list[torch.Tensor]) -> ReducedFeatures:
        chosen = max_min_diverse(features, [self.kept_features(image.shape[0]) for image in features])
        kept = [image[indices] for image, indices in zip(features, chosen)]
        return ReducedFeatures(features=kept, kept_indices=[indices.tolist() for indices in chosen])

    def overhead_flops(self, shape: ModelShape, trace: SampleTrace) -> int:
        """The cosine-similarity matrix over the image's projected features."""
        return 2 * trace.num_image_tokens**2 * shape.text.hidden

    def record(self) -> dict:
        return {**super().record(), "ratios": [self.ratio]}
