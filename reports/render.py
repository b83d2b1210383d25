"""A report as a list of blocks, rendered to one self-contained HTML file and to Markdown + PNGs."""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str
    note: bool = False  # a caveat or "nothing to show" line, set off visually


@dataclass
class Table:
    df: pd.DataFrame  # display strings; the index is not shown


@dataclass
class Image:
    name: str  # file name of the PNG beside report.md
    png: bytes
    alt: str


@dataclass
class Code:
    text: str


def slug(name: str) -> str:
    """A name made safe for a file name (an image beside report.md)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "sweep"


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1400px;
padding:0 1.5em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #ddd;padding-bottom:.2em}h2{border-bottom:1px solid #eee;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;height:auto;display:block;margin:.5em 0 1em}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;font-size:.85em;border-radius:4px}
.note{color:#8a5a00;background:#fff8e6;padding:.4em .7em;border-left:3px solid #e0a800}
.tbl{overflow-x:auto;max-width:100%}
"""


def to_html(title: str, blocks: list) -> str:
    body = "\n".join(_html_block(b) for b in blocks)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style></head>\n"
            f"<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


def _html_block(b) -> str:
    if isinstance(b, Heading):
        return f"<h{b.level}>{html.escape(b.text)}</h{b.level}>"
    if isinstance(b, Para):
        return f'<p class="note">{html.escape(b.text)}</p>' if b.note else f"<p>{html.escape(b.text)}</p>"
    if isinstance(b, Table):
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in b.df.columns)
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>"
                       for r in b.df.itertuples(index=False))
        return f'<div class="tbl"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'
    if isinstance(b, Image):
        data = base64.b64encode(b.png).decode("ascii")
        return f'<img src="data:image/png;base64,{data}" alt="{html.escape(b.alt)}">'
    if isinstance(b, Code):
        return f"<pre><code>{html.escape(b.text)}</code></pre>"
    raise TypeError(f"unknown block {b!r}")


def to_markdown(title: str, blocks: list) -> str:
    return f"# {title}\n\n" + "\n\n".join(_md_block(b) for b in blocks) + "\n"


def images(blocks: list) -> list[Image]:
    return [b for b in blocks if isinstance(b, Image)]


def write_markdown(path: Path, title: str, blocks: list) -> None:
    """report.md and its PNGs, side by side in path's folder."""
    for img in images(blocks):
        (path.parent / img.name).write_bytes(img.png)
    path.write_text(to_markdown(title, blocks), encoding="utf-8")


def _md_cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _md_block(b) -> str:
    if isinstance(b, Heading):
        return "#" * b.level + " " + b.text
    if isinstance(b, Para):
        return f"> {b.text}" if b.note else b.text
    if isinstance(b, Table):
        cols = [_md_cell(c) for c in b.df.columns]
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(_md_cell(v) for v in r) + " |" for r in b.df.itertuples(index=False)]
        return "\n".join(lines)
    if isinstance(b, Image):
        return f"![{b.alt}]({b.name})"
    if isinstance(b, Code):
        return f"```sh\n{b.text}\n```"
    raise TypeError(f"unknown block {b!r}")
