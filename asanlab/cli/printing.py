"""Printing results to stdout: findings in each format, a soak's analysis, colour on a terminal."""

from __future__ import annotations

import sys

from ..reports import text
from .common import Format, out


def _print_findings(session: dict | None, findings, fmt: Format, show_all: bool, full: bool = False,
                    notices: list | None = None) -> None:
    from ..reports import export

    if fmt is Format.json:
        body = text.render_json(session, findings, notices)
    elif fmt is Format.sarif:
        body = export.to_sarif(findings, app_entry=export.app_entry_of(session))
    elif fmt is Format.junit:
        body = export.to_junit(findings)
    else:
        body = text.render(session, findings, show_all=show_all, full=full, notices=notices)
        if out.is_terminal:
            _print_coloured(body)
            return
    sys.stdout.write(body)


# Colour only on a terminal (rich also honours NO_COLOR); files and pipes get the plain text.
STYLES = [(r"^\[\d+\] (ERROR|UNDEFINED)", "bold red"), (r"^\[\d+\] LEAK", "bold yellow"),
          (r"^    \* #.*", "bold cyan"), (r"^  NOTE", "magenta"), (r"^soak: LEAK.*", "bold red"),
          (r"^soak: STABLE.*", "bold green"), (r"^soak: INCONCLUSIVE.*", "bold yellow"),
          (r"^\d+ finding\(s\).*", "bold")]


def _print_coloured(body: str) -> None:
    import re

    from rich.text import Text

    for line in body.splitlines():
        t = Text(line)
        for pattern, style in STYLES:
            m = re.match(pattern, line)
            if m:
                t.stylize(style, 0, m.end())
        out.print(t, highlight=False)


def _print_soak(s, analysis: dict | None) -> None:
    from ..soak import plot, report as soak_report
    from ..soak.driver import read_samples

    if analysis is None:
        sys.stdout.write("soak: no memory sample was taken\n")
        return
    chart = ""
    if out.is_terminal:
        chart = plot.terminal(read_samples(s), analysis, width=min(out.width, 100))
    rendered = soak_report.render(analysis, chart)
    if out.is_terminal:
        _print_coloured(rendered)
    else:
        sys.stdout.write(rendered)
    sys.stdout.write(f"samples, analysis and plot: {s.path / 'soak'}\n\n")
