"""Entry point from a checkout: `python run_eval.py --list-tasks` (same as the `pdrop-eval` console script)."""

from pdrop_eval.cli import main

raise SystemExit(main())
