"""A report as a list of plain blocks, rendered twice: markdown that links its PNGs, HTML that embeds them.

Building the content once and rendering it two ways keeps report.md and report.html saying the same thing, and
keeps formatting rules (escaping, number display) out of the code that decides what to show.
"""

from __future__ import annotations

import base64
import html
import math
import os
from dataclasses import dataclass
from pathlib import Path

MISSING = "—"


@dataclass(frozen=True)
class Heading:
    text: str
    level: int


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Callout:
    """A caveat the reader must see before trusting the numbers around it."""

    text: str


@dataclass(frozen=True)
class Table:
    columns: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Figure:
    path: Path
    caption: str


Block = Heading | Paragraph | Callout | Table | Figure


def fmt(value: object, decimals: int = 2, signed: bool = False) -> str:
    """Numbers for tables: fixed decimals, an explicit sign for differences, a dash for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"
    return str(value) or MISSING


def fmt_lambda(value: object) -> str:
    """λ as chosen (to 0.001 for --budget): 0.254 and 0.28 must not both read 0.3."""
    if isinstance(value, float) and not math.isnan(value):
        return f"{round(value, 3):g}"
    return MISSING


def fmt_interval(low: object, high: object, decimals: int = 2, signed: bool = False) -> str:
    """[low, high], or a dash when the interval could not be computed."""
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (low, high)):
        return MISSING
    return f"[{fmt(low, decimals, signed)}, {fmt(high, decimals, signed)}]"


def fmt_p(value: object) -> str:
    if isinstance(value, float) and not math.isnan(value):
        return "<0.001" if value < 0.001 else f"{value:.3f}"
    return MISSING


def fmt_tflops(value: object) -> str:
    """Two decimals like the paper, but three significant digits for tiny models that would all read 0.00."""
    if isinstance(value, float) and not math.isnan(value) and 0 < abs(value) < 0.01:
        return f"{value:.3g}"
    return fmt(value)


def _md_escape(text: str) -> str:
    """Schedule labels are full of underscores; unescaped they would turn into italics."""
    for char in "\\`*_|[]<>":
        text = text.replace(char, "\\" + char)
    return text


def to_markdown(blocks: list[Block], base: Path) -> str:
    """Markdown with figure paths relative to `base` (the folder report.md is written to)."""
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + _md_escape(block.text), ""]
        elif isinstance(block, Paragraph):
            lines += [_md_escape(block.text), ""]
        elif isinstance(block, Callout):
            lines += [f"> **Warning:** {_md_escape(block.text)}", ""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(_md_escape(c) for c in block.columns) + " |")
            lines.append("|" + "|".join("---" for _ in block.columns) + "|")
            lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in block.rows]
            lines.append("")
        else:
            relative = Path(os.path.relpath(block.path, base)).as_posix()
            lines += [f"![{_md_escape(block.caption)}]({relative})", "", f"*{_md_escape(block.caption)}*", ""]
    return "\n".join(lines)


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1, h2, h3, p, figcaption { overflow-wrap: anywhere; }
.warning { background: #fff4e5; border-left: 4px solid #e8a33d; padding: 0.4em 0.8em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td { white-space: nowrap; }
.wide { overflow-x: auto; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
"""


def to_html(blocks: list[Block], title: str) -> str:
    """A single self-contained page: the PNGs are inlined as base64 data URIs, the style sheet is inline."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
    ]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Callout):
            parts.append(f'<p class="warning"><strong>Warning:</strong> {html.escape(block.text)}</p>')
        elif isinstance(block, Table):
            header = "".join(f"<th>{html.escape(c)}</th>" for c in block.columns)
            parts.append(f'<div class="wide"><table><thead><tr>{header}</tr></thead><tbody>')
            parts += ["<tr>" + "".join(_html_cell(c) for c in row) + "</tr>" for row in block.rows]
            parts.append("</tbody></table></div>")
        else:
            data = base64.b64encode(block.path.read_bytes()).decode("ascii")
            caption = html.escape(block.caption)
            parts.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
                f"<figcaption>{caption}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


def _html_cell(text: str) -> str:
    """Measured numbers (written with decimals) align right; labels such as layers "2" stay left."""
    try:
        numeric = text.startswith("[") or ("." in text and math.isfinite(float(text)))
    except ValueError:
        numeric = False
    return f'<td class="num">{html.escape(text)}</td>' if numeric else f"<td>{html.escape(text)}</td>"
