"""`deita-train report OUTPUT_DIR` (also run at the end of `run`): `report/index.html` and `report/summary.md` from
what the run left on disk, with a section for each stage that ran."""

from __future__ import annotations

from pathlib import Path

from deita_train.report.outputs import RunOutputs
from deita_train.report.page import render_html, render_markdown
from deita_train.report.sections import SECTIONS
from deita_train.storage import write_text


def render_report(out: Path) -> Path:
    """Write the report of the run in `out`; the path of `index.html`."""
    outputs = RunOutputs.read(out)
    sections = [section for build in SECTIONS if (section := build(outputs)) is not None]
    title = f"deita-train report: {out.name}"
    write_text(out / "report" / "index.html", render_html(title, sections))
    write_text(out / "report" / "summary.md", render_markdown(title, sections))
    return out / "report" / "index.html"
