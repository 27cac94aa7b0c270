"""Command line: argparse in, calls into the library out; no logic of its own.

A `PdropEvalError` anywhere becomes one `error: ...` line on stderr and exit status 2, never a traceback; so does an
`OSError` that no module turned into one (a disk that fills up or a folder that vanishes mid-run). Ctrl-C is one
`error: interrupted ...` line and exit status 130 (128 + SIGINT, what shells report for an interrupted command, so
scripts can tell it from bad input). Predictions are fsynced per batch, so in every case the same command resumes.
A `PdropEvalWarning` is one `warning: ...` line.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from pdrop_eval.errors import PdropEvalError, PdropEvalWarning, RefusedOnEveryRank

EXAMPLES = """examples:
  python run_eval.py --model llava-hf/llava-1.5-7b-hf --tasks gqa,mmstar --lambda 0.5
  python run_eval.py --tasks pope --lambda 0.3,0.4,0.5,0.6 --layers 8,16,24 --layers 4,12,20 --baselines vanilla,fastv
  python run_eval.py --tasks textvqa --budget 192,128,64 --layers 2,6,12
  python run_eval.py --tasks gqa --methods visionzip,divprune,dart,downsample,fastv,pdrop,vanilla --budget 192,128,64 \
      --layers 2,6,12
  torchrun --nproc_per_node 8 run_eval.py --tasks gqa --lambda 0.5 --batch-size 16
  python run_eval.py --tasks gqa --lambda 0.5 --batch-size auto --check-batch-effect 32
  python run_eval.py report results/demo            # rebuild the spreadsheet and report from disk
  python run_eval.py --list-tasks
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one `error:` line (no usage dump), like every other error here."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _method_names() -> str:
    from pdrop_eval.methods.registry import METHODS

    return ", ".join(METHODS)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pdrop-eval",
        description="Evaluate PyramidDrop and other visual-token pruning on LLaVA-style models.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--list-tasks", action="store_true",
        help="list the tasks with their size, whether their data was found and where it is published")
    add("--model", default="llava-hf/llava-1.5-7b-hf",
        help="HF id in the local cache, a local directory (HF or original LLaVA format), or tiny-llava / "
             "tiny-llava-next / tiny-llava-qwen2 (default: %(default)s)")
    add("--tasks", default=None, help="comma-separated task names, e.g. gqa,mmstar (see --list-tasks)")
    add("--lambda", dest="lambdas", default=None,
        help="PDrop λ values, each in (0, 1]; keep ratios are λ, λ², λ³ after each layer, e.g. 0.3,0.4,0.5,0.6")
    add("--layers", action="append", default=None,
        help="drop layers of one schedule, e.g. 8,16,24; repeat the flag or separate with ';' for several "
             "(default 8,16,24)")
    add("--ratios", action="append", default=None,
        help="explicit cumulative keep ratios per drop layer, e.g. 0.5,0.25,0.125 (repeatable, or ';')")
    add("--baselines", default=None,
        help=f"comma-separated methods to add at their default settings ({_method_names()}), e.g. vanilla,fastv "
             "(FastV K=2 R=50%%; random at each layer list with the --ratios given, else λ=0.5's ratios)")
    add("--methods", default=None,
        help="comma-separated methods to run at each --budget with the settings their papers use for it, e.g. "
             "visionzip,divprune,dart,downsample,fastv,pdrop,vanilla (vanilla runs once); default pdrop")
    add("--budget", default=None,
        help="average retained image tokens per LLM layer, e.g. 192,128,64 (LLaVA-1.5 of 576): each --methods "
             "method's settings for each budget are chosen and printed (PDrop: the closest λ at each layer list; "
             "cannot be combined with --lambda or --ratios)")
    add("--position-mode", default="auto", choices=("auto", "compact", "original"),
        help="RoPE positions of surviving tokens: compact re-indexes them (official PDrop), original keeps them; "
             "auto (default) takes the model family's choice: compact on LLaVA, original on Qwen2.5-VL (its M-RoPE "
             "rows hold the image's 2-D grid)")
    add("--limit", type=int, default=None, help="only the first N samples of each task, e.g. --limit 100")
    add("--batch-size", default="8",
        help="samples per batch (default 8), or auto: the largest batch that fits on the GPU, measured after the "
             "model loads and printed in one line (on a CPU auto is 8)")
    add("--check-batch-effect", default=None, metavar="K",
        help="after the run, rerun the first K samples of each task × schedule at batch 1 and record in metrics.json "
             "and the report how many kept the same answer and kept image tokens, e.g. 32")
    add("--data-workers", type=int, default=None,
        help="threads reading, decoding and tokenising batches ahead of the model (default: this process's share "
             "of the CPU cores, at most 4; 0 prepares each batch on the main thread, between model calls)")
    add("--no-length-buckets", action="store_true",
        help="batch samples in dataset order even where image-token counts vary (LLaVA-NeXT, Qwen2.5-VL): by default each "
             "window of 8 batches is sorted by prompt length so batches pad little; answers are the same in "
             "float32, in float16/bfloat16 a sample's answer can depend on its batch")
    add("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"),
        help="model dtype; auto = float16 on GPU (as LLaVA's evaluation), float32 on CPU")
    add("--device", default="auto", help="auto (this rank's GPU, else CPU), cpu, cuda, cuda:1 ...")
    add("--attn", default="sdpa", choices=("sdpa", "eager", "flash_attention_2"), help="attention kernel")
    add("--max-new-tokens", type=int, default=None, help="override the task cards' generation length, e.g. 16")
    add("--output-dir", default="results", help="where run folders go (default: %(default)s)")
    add("--run-name", default=None, help="folder name under --output-dir (default: model name and tasks)")
    add("--data-root", default=None,
        help="root of LLaVA eval folders (gqa/, textvqa/, pope/, mmbench/) and of Hugging Face copies under "
             "<root>/hf/<owner>/<name>; default $PDROP_DATA, else ./data")
    add("--tasks-dir", default=None,
        help="folder of extra task cards (*.yaml); a card replaces a built-in task of the same name")
    add("--seed", type=int, default=0, help="seed for the random baseline (default 0)")
    add("--overwrite", action="store_true", help="delete this run's earlier predictions and start afresh")
    add("--no-report", action="store_true", help="skip the spreadsheet and sweep report at the end")
    add("--scorer", choices=("native", "vlmeval"), default="native",
        help="native: pdrop_eval's scorers (default); vlmeval: VLMEvalKit's own dataset classes for "
             "MMStar, DocVQA, ChartQA, MMBench, InfoVQA, OCRVQA (needs the vlmeval package)")
    return parser


def build_report_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pdrop-eval report",
        description="Rebuild results.xlsx and report.md/html from run folders on disk (no model needed); "
                    "several folders are merged into one comparison.",
    )
    parser.add_argument("run_dirs", nargs="+", help="run folders holding metrics.json")
    parser.add_argument("--out", default=None, help="output folder (required when merging several runs)")
    parser.add_argument("--tflops", choices=("paper", "exact"), default="paper",
                        help="TFLOPs convention on the plots' x axis and for the Pareto front (default: paper)")
    return parser


SEED_RANGE = range(2**64)  # what torch.manual_seed accepts as an unsigned 64-bit seed


def _names(value: str | None, flag: str, example: str) -> tuple[str, ...]:
    """Comma-separated names, each once; a flag given with no name in it is an error, never silently nothing."""
    if value is None:
        return ()
    names = tuple(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))
    if not names:
        raise PdropEvalError(f"{flag} {value!r} names nothing: give e.g. {flag} {example}")
    return names


def _positive(value: int | None, flag: str) -> None:
    if value is not None and value < 1:
        raise PdropEvalError(f"{flag} must be at least 1, got {value}")


def plan_from_args(args: argparse.Namespace, argv: Sequence[str]):
    from pdrop_eval.batch_check import parse_check_count
    from pdrop_eval.batch_size import AUTO, CPU_BATCH_SIZE, parse_batch_size
    from pdrop_eval.plan import (
        DEFAULT_LAYERS,
        RunPlan,
        build_schedules,
        check_methods,
        parse_layer_lists,
        parse_number_list,
        parse_ratio_lists,
        resolve_position_mode,
        validate_run_name,
    )

    tasks = _names(args.tasks, "--tasks", "gqa,mmstar")
    if not tasks:
        raise PdropEvalError("--tasks is required, e.g. --tasks gqa,mmstar (see --list-tasks)")
    if args.budget is not None and (args.lambdas is not None or args.ratios):
        raise PdropEvalError("--budget chooses λ itself: give either --budget or --lambda/--ratios, not both")
    _positive(args.limit, "--limit")
    batch_size = parse_batch_size(args.batch_size)
    check_batch_effect = parse_check_count(args.check_batch_effect)
    if args.data_workers is not None and args.data_workers < 0:
        raise PdropEvalError(f"--data-workers must be 0 or more, got {args.data_workers}")
    _positive(args.max_new_tokens, "--max-new-tokens")
    if args.seed not in SEED_RANGE:
        raise PdropEvalError(f"--seed must be a whole number from 0 to 2**64-1, got {args.seed}")
    lambdas = parse_number_list(args.lambdas, "--lambda") if args.lambdas is not None else ()
    layer_lists = parse_layer_lists(args.layers or [])
    ratio_lists = parse_ratio_lists(args.ratios or [])
    baselines = _names(args.baselines, "--baselines", "vanilla,fastv")
    budgets = parse_number_list(args.budget, "--budget") if args.budget is not None else ()
    if any(budget <= 0 for budget in budgets):
        raise PdropEvalError(f"--budget values must be positive token counts, got {list(budgets)}")
    methods = _names(args.methods, "--methods", "visionzip,divprune")
    position_mode = resolve_position_mode(args.position_mode, args.model)
    if (budgets or methods) and not (lambdas or ratio_lists or baselines):
        schedules = ()
    else:
        schedules = build_schedules(lambdas, layer_lists, ratio_lists, baselines, position_mode, args.seed)
    if args.run_name is not None:
        run_name = validate_run_name(args.run_name)
    else:
        default = f"{Path(args.model.rstrip('/')).name}_{'-'.join(tasks)}"
        run_name = re.sub(r"[^A-Za-z0-9._-]", "_", default)
    plan = RunPlan(
        model=args.model,
        tasks=tasks,
        schedules=schedules,
        run_name=run_name,
        output_dir=Path(args.output_dir),
        batch_size=CPU_BATCH_SIZE if batch_size == AUTO else batch_size,
        auto_batch_size=batch_size == AUTO,
        check_batch_effect=check_batch_effect,
        limit=args.limit,
        dtype=args.dtype,
        device=args.device,
        attn=args.attn,
        max_new_tokens=args.max_new_tokens,
        data_root=args.data_root,
        tasks_dir=args.tasks_dir,
        seed=args.seed,
        overwrite=args.overwrite,
        scorer=args.scorer,
        budgets=budgets,
        methods=methods,
        budget_layers=layer_lists or (DEFAULT_LAYERS,),
        position_mode=position_mode,
        position_mode_from="--position-mode" if args.position_mode != "auto" else "model family default",
        report=not args.no_report,
        command=tuple(argv),
        data_workers=args.data_workers,
        length_buckets=not args.no_length_buckets,
    )
    check_methods(plan)
    return plan


def _report(argv: Sequence[str]) -> int:
    """Rebuild reports; the folder written to is locked (a run still going there is refused), the run folders only
    read are not: their metrics.json is replaced atomically, so a report read from a running run is a consistent
    snapshot of its last finish."""
    from pdrop_eval.lock import FolderLock
    from pdrop_eval.report import build_reports
    from pdrop_eval.store import remove_stale_temporaries

    args = build_report_parser().parse_args(argv)
    out = Path(args.out) if args.out else None
    target = out if out is not None else Path(args.run_dirs[0])
    lock = FolderLock(target) if target.is_dir() else None
    if lock is not None:
        lock.acquire(["pdrop-eval", "report", *argv], "wait for it to finish, or write the report elsewhere with --out")
        remove_stale_temporaries(target)
    try:
        paths = build_reports([Path(d) for d in args.run_dirs], out, tflops=args.tflops)
    finally:
        if lock is not None:
            lock.release()
    print(f"wrote {_spreadsheet_line(paths)}\nwrote {paths.markdown}\nwrote {paths.html}")
    _print_warnings(paths)
    return 0


def _print_warnings(paths) -> None:
    """The report's caveats (another model than the paper's, a partial task, unlike runs) on the console too."""
    for line in paths.warnings:
        print(f"warning: {line}", file=sys.stderr)


def _spreadsheet_line(paths) -> str:
    return str(paths.spreadsheet) if paths.spreadsheet else "no results.xlsx (needs openpyxl: pip install openpyxl)"


def _evaluate(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from pdrop_eval.runner import format_table, run

    plan = plan_from_args(args, argv)
    outcome = run(plan)
    if outcome is None:
        return 0
    print(format_table(outcome.metrics["results"]))
    print(f"predictions and metrics.json in {plan.run_dir}")
    if outcome.report is not None:
        print(f"spreadsheet {_spreadsheet_line(outcome.report)}; report {outcome.report.html}")
        _print_warnings(outcome.report)
    return 0


def _run(argv: Sequence[str]) -> int:
    if argv and argv[0] == "report":
        return _report(argv[1:])
    args = build_parser().parse_args(argv)
    if args.scorer == "vlmeval":
        from pdrop_eval.data.vlmeval_scoring import require_vlmeval

        require_vlmeval()
    if args.list_tasks:
        from pdrop_eval.registry import describe_tasks

        print(describe_tasks(args.tasks_dir, args.data_root))
        return 0
    return _evaluate(args, argv)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A PdropEvalWarning as one `warning:` line, printed by rank 0 only under torchrun (every rank loads the data);
    any other warning as Python shows it."""
    if not issubclass(category, PdropEvalWarning):
        _PYTHON_SHOWWARNING(message, category, filename, lineno, file, line)
        return
    from pdrop_eval.distributed import current_world

    if current_world().is_main:
        print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)


_PYTHON_SHOWWARNING = warnings.showwarning


def missing_dependency(err: ModuleNotFoundError) -> str:
    """Usually the project's virtual environment is not active (after `make demo`, `python` is the system one)."""
    return (
        f"the Python package {err.name or str(err)!r} is not installed for {sys.executable}: activate the project's "
        "environment first (source .venv/bin/activate, made by `make install`), or install the package with "
        "pip install -e ."
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return _run(argv)
        except RefusedOnEveryRank as err:
            from pdrop_eval.distributed import barrier, current_world

            status = _fail(str(err), 2)
            sys.stderr.flush()
            barrier(current_world())  # every rank raised it together: none exits before all have printed
            return status
        except PdropEvalError as err:
            return _fail(str(err), 2)
        except ModuleNotFoundError as err:
            return _fail(missing_dependency(err), 2)
        except OSError as err:
            where = f" {err.filename}" if err.filename else ""
            return _fail(
                f"cannot use{where} ({err.strerror or err}): free space or fix that path, then rerun the same "
                "command; predictions written so far are kept",
                2,
            )
        except KeyboardInterrupt:
            return _fail(
                "interrupted (Ctrl-C): predictions written so far are kept; rerun the same command to resume", 130
            )


def _fail(message: str, status: int) -> int:
    """The one line a failed command prints (whitespace folded, so a message never spans lines)."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return status
