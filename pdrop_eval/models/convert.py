"""`python -m pdrop_eval.models.convert SRC --vision-tower PATH --out DIR`: convert an original-format LLaVA
checkpoint once, ahead of time, e.g. where `load_vlm` cannot find the vision tower the checkpoint names.

Kept apart from the conversion code so that `python -m` does not import this module twice.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pdrop_eval.errors import PdropEvalError
from pdrop_eval.models.cache import build_once
from pdrop_eval.models.locate import find_local, missing_message
from pdrop_eval.models.original import convert_original


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pdrop_eval.models.convert",
        description="Convert an original-format LLaVA checkpoint to a HF Llava directory that load_vlm reads.",
    )
    parser.add_argument("src", help="original LLaVA checkpoint: a local directory or a cached HF id")
    parser.add_argument("--vision-tower", required=True, help="CLIP checkpoint: a local directory or a cached HF id")
    parser.add_argument("--out", required=True, type=Path, help="output directory (must not exist yet)")
    args = parser.parse_args(argv)
    try:
        src = find_local(args.src)
        tower = find_local(args.vision_tower)
        if src is None:
            raise PdropEvalError(missing_message(args.src, "checkpoint"))
        if tower is None:
            raise PdropEvalError(missing_message(args.vision_tower, "vision tower"))
        if args.out.exists():
            raise PdropEvalError(f"{args.out} already exists; choose a new output directory")
        build_once(args.out, lambda staging: convert_original(src, tower, staging))
    except PdropEvalError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"converted {src} -> {args.out}; load it with load_vlm({str(args.out)!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
