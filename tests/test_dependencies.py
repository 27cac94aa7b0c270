"""The declared dependency floors: an install must never resolve to a torch whose safe loader can be bypassed."""

from __future__ import annotations

from pathlib import Path

from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_torch_floor_excludes_versions_whose_weights_only_load_can_be_bypassed():
    """pdrop_eval.models.checkpoint reads `.bin` shards with torch.load(weights_only=True). That loader could be
    made to run code up to 2.5.1 (CVE-2025-32434, fixed in 2.6.0) and to corrupt memory before 2.10.0
    (CVE-2026-24747, GHSA advisory: patched in 2.10.0)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    torch = next(Requirement(r) for r in project["dependencies"] if Requirement(r).name == "torch")
    for vulnerable in ("2.4.1", "2.5.1", "2.6.0", "2.9.1"):
        assert not torch.specifier.contains(vulnerable), f"{torch} admits torch {vulnerable}"
    assert torch.specifier.contains("2.10.0") and torch.specifier.contains("2.13.0")
