"""Where an image's tokens lie on the picture a kept-token map draws, for any family: one fixed grid (LLaVA-1.5),
a grid per image (Qwen2.5-VL), or tiles with their own grids and tokens that cover no cell (LLaVA-NeXT's base view,
unpadded anyres tiles and newline tokens).

A layout is saved beside each sample image the runner keeps (JSON), so a report draws maps without the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pdrop_eval.errors import PdropEvalError


@dataclass(frozen=True)
class Tile:
    """A rectangle of the view (pixels: left, top, right, bottom), cut row-major into rows × columns cells."""

    box: tuple[int, int, int, int]
    rows: int
    columns: int


@dataclass(frozen=True)
class TokenLayout:
    """`tokens[i]` is image token i's (tile, cell) — cell row-major within the tile — or None for a token with no
    place on the view (a newline token). Methods that select tower patches crop by crop (`kept_index_space`
    "crops") index tile c's cells as `c · cells + cell`, every tile then having the same grid."""

    tiles: tuple[Tile, ...]
    tokens: tuple[tuple[int, int] | None, ...]

    @classmethod
    def single_grid(cls, width: int, height: int, rows: int, columns: int) -> TokenLayout:
        """The whole view as one grid whose cells are the tokens, row-major."""
        cells = tuple((0, cell) for cell in range(rows * columns))
        return cls(tiles=(Tile((0, 0, width, height), rows, columns),), tokens=cells)

    def cells_of(self, indices: list[int] | tuple[int, ...], space: str = "tokens") -> set[tuple[int, int]]:
        """The (tile, cell) pairs `indices` cover; tokens without a place cover none."""
        if space == "crops":
            per_tile = self.tiles[0].rows * self.tiles[0].columns
            if any(tile.rows * tile.columns != per_tile for tile in self.tiles):
                raise PdropEvalError("crop-major indices need every tile of the layout to have the same grid")
            return {divmod(int(index), per_tile) for index in indices}
        return {self.tokens[int(index)] for index in indices if self.tokens[int(index)] is not None}

    def index_limit(self, space: str = "tokens") -> int:
        """One past the largest index `cells_of` accepts in `space`."""
        if space == "crops":
            return sum(tile.rows * tile.columns for tile in self.tiles)
        return len(self.tokens)

    def to_json(self) -> dict[str, Any]:
        return {
            "tiles": [{"box": list(t.box), "rows": t.rows, "columns": t.columns} for t in self.tiles],
            "tokens": [None if place is None else list(place) for place in self.tokens],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TokenLayout:
        tiles = tuple(Tile(tuple(int(v) for v in t["box"]), int(t["rows"]), int(t["columns"])) for t in data["tiles"])
        tokens = tuple(None if place is None else (int(place[0]), int(place[1])) for place in data["tokens"])
        return cls(tiles=tiles, tokens=tokens)
