"""The report's two renderings from one list of sections: `index.html` (self-contained: charts embedded as PNG data,
no script, no network) and `summary.md` (the same text and tables; the charts are in the HTML)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from typing import Any

STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 64rem; padding: 1rem 2rem; color: #212529; }
nav a { margin-right: 0.8rem; }
section { border-top: 1px solid #dee2e6; padding-top: 0.5rem; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #dee2e6; padding: 0.2rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f1f3f5; }
img { max-width: 100%; margin: 0.5rem 0; }
pre { white-space: pre-wrap; background: #f8f9fa; padding: 0.4rem; margin: 0; font-size: 0.85rem; }
.note { color: #495057; }
"""


@dataclass
class Section:
    """One part of the report: a heading, then text, tables and charts in order."""

    anchor: str
    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def text(self, words: str) -> Section:
        self.blocks.append(("text", words))
        return self

    def table(self, headers: list[str], rows: list[list[Any]]) -> Section:
        self.blocks.append(("table", (headers, rows)))
        return self

    def chart(self, png: bytes, alt: str) -> Section:
        self.blocks.append(("chart", (png, alt)))
        return self

    def html(self) -> str:
        parts = [f'<section id="{self.anchor}"><h2>{html.escape(self.title)}</h2>']
        for kind, content in self.blocks:
            if kind == "text":
                parts.append(f'<p class="note">{html.escape(content)}</p>')
            elif kind == "table":
                headers, rows = content
                head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
                body = "".join("<tr>" + "".join(f"<td>{cell_html(c)}</td>" for c in row) + "</tr>" for row in rows)
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            else:
                png, alt = content
                data = base64.b64encode(png).decode("ascii")
                parts.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')
        return "\n".join([*parts, "</section>"])

    def markdown(self) -> str:
        parts = [f"## {self.title}", ""]
        for kind, content in self.blocks:
            if kind == "text":
                parts += [content, ""]
            elif kind == "table":
                headers, rows = content
                parts += ["| " + " | ".join(map(str, headers)) + " |", "|" + "---|" * len(headers)]
                parts += ["| " + " | ".join(cell_markdown(c) for c in row) + " |" for row in rows]
                parts.append("")
            else:
                parts += [f"*Chart: {content[1]} (in index.html).*", ""]
        return "\n".join(parts)


def cell_html(value: Any) -> str:
    if isinstance(value, Block):
        return f"<pre>{html.escape(value.text)}</pre>"
    return html.escape(format_value(value))


def cell_markdown(value: Any) -> str:
    text = value.text if isinstance(value, Block) else format_value(value)
    return text.replace("|", "\\|").replace("\n", " ⏎ ")


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "" if value is None else str(value)


@dataclass(frozen=True)
class Block:
    """A cell shown as preformatted text (a conversation, say)."""

    text: str


def render_html(title: str, sections: list[Section]) -> str:
    nav = " ".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
    body = "\n".join(section.html() for section in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1><nav>{nav}</nav>\n{body}\n"
            "</body></html>\n")


def render_markdown(title: str, sections: list[Section]) -> str:
    return "\n".join([f"# {title}", "", *(section.markdown() for section in sections)])
