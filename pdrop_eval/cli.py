"""Command line: argparse in, calls into the library out; no logic of its own.

A `PdropEvalError` anywhere becomes one `error: ...` line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pdrop_eval.data.vlmeval_scoring import require_vlmeval
from pdrop_eval.errors import PdropEvalError
from pdrop_eval.registry import describe_tasks


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pdrop-eval", description="Evaluate PyramidDrop and other visual-token pruning on LLaVA-style models."
    )
    parser.add_argument("--list-tasks", action="store_true",
                        help="list the tasks with their size, whether their data was found and where it is published")
    parser.add_argument("--data-root", default=None,
                        help="root of LLaVA eval folders (gqa/, textvqa/, pope/, mmbench/) and of Hugging Face "
                             "copies under <root>/hf/<owner>/<name>; default $PDROP_DATA, else ./data")
    parser.add_argument("--tasks-dir", default=None,
                        help="folder of extra task cards (*.yaml); a card replaces a built-in task of the same name")
    parser.add_argument("--scorer", choices=("native", "vlmeval"), default="native",
                        help="native: pdrop_eval's scorers (default); vlmeval: VLMEvalKit's own dataset classes for "
                             "MMStar, DocVQA, ChartQA, MMBench, InfoVQA, OCRVQA (needs the vlmeval package)")
    return parser


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.scorer == "vlmeval":
        require_vlmeval()
    if args.list_tasks:
        print(describe_tasks(args.tasks_dir, args.data_root))
        return 0
    parser.print_usage(sys.stderr)
    print("error: nothing to do; try --list-tasks", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args, parser)
    except PdropEvalError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
