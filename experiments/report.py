"""Render saved verdicts for people and for papers: text blocks, Markdown, CSV or JSON.

The text form fits a terminal: one block per claim (verdict, claim, predicted, measured), each
line wrapped to the width and a long measurement cut after ``max_lines`` lines (the whole text
stays in ``results/NAME/validate.json`` and in the other formats), then the findings apart
(observations without a prediction, never counted in the totals), then the totals.
"""

from __future__ import annotations

import io
import json
import textwrap
from collections.abc import Callable

import pandas as pd

FORMATS: tuple[str, ...] = ("text", "markdown", "csv", "json")
MIN_WIDTH = 40
INDENT = "       "


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _wrap(label: str, value: object, width: int, max_lines: int | None) -> list[str]:
    lines = textwrap.wrap(_text(value), width=width, initial_indent=f"{INDENT}{label}",
                          subsequent_indent=INDENT + " " * len(label), break_on_hyphens=False)
    if max_lines is not None and len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(width - 2, 0)].rstrip() + " …"
    return lines or [f"{INDENT}{label}"]


def _totals(claims: pd.DataFrame, findings: pd.DataFrame) -> dict[str, int]:
    n_pass = int((claims["verdict"] == "pass").sum())
    return {"claims": len(claims), "pass": n_pass, "fail": len(claims) - n_pass,
            "findings": len(findings), "experiments": int(claims["experiment"].nunique())}


def totals_line(claims: pd.DataFrame, findings: pd.DataFrame) -> str:
    """``"39 claims: 38 pass, 1 fail (12 experiments); 3 findings, not counted"``."""
    t = _totals(claims, findings)
    return (f"{t['claims']} claims: {t['pass']} pass, {t['fail']} fail ({t['experiments']} "
            f"experiments); {t['findings']} findings, not counted")


def render_text(claims: pd.DataFrame, findings: pd.DataFrame, *, width: int = 100,
                max_lines: int | None = 4) -> str:
    """One block per claim, grouped by experiment; findings apart; totals last."""
    width = max(int(width), MIN_WIDTH)
    out: list[str] = []
    for name, group in claims.groupby("experiment", sort=True):
        n_pass = int((group["verdict"] == "pass").sum())
        out.append(f"{name}: {n_pass} of {len(group)} claims pass")
        for row in group.itertuples(index=False):
            mark = "[PASS]" if row.verdict == "pass" else "[FAIL]"
            out.extend(textwrap.wrap(_text(row.claim), width=width, initial_indent=f"{mark} ",
                                     subsequent_indent=INDENT, break_on_hyphens=False))
            out.extend(_wrap("predicted: ", row.predicted, width, max_lines))
            out.extend(_wrap("measured:  ", row.measured, width, max_lines))
        out.append("")
    if len(findings):
        out.append("Findings (observations without a prediction; not counted as passes)")
        for row in findings.itertuples(index=False):
            out.extend(textwrap.wrap(f"{row.experiment}: {row.finding}", width=width,
                                     initial_indent="  - ", subsequent_indent="    ",
                                     break_on_hyphens=False))
            out.extend(_wrap("", row.measured, width, max_lines))
        out.append("")
    out.extend(textwrap.wrap(totals_line(claims, findings), width=width))
    if max_lines is not None:
        out.extend(textwrap.wrap("(long measurements are cut; `--whole`, `--format json` or "
                                 "results/NAME/validate.json has them whole)", width=width))
    return "\n".join(out)


def _cell(value: object) -> str:
    return _text(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(claims: pd.DataFrame, findings: pd.DataFrame) -> str:
    """Two Markdown tables (claims, findings) and the totals, ready to paste."""
    out = ["| experiment | claim | predicted | measured | verdict |", "|---|---|---|---|---|"]
    out += [f"| {_cell(r.experiment)} | {_cell(r.claim)} | {_cell(r.predicted)} | "
            f"{_cell(r.measured)} | **{r.verdict}** |" for r in claims.itertuples(index=False)]
    if len(findings):
        out += ["", "Findings (observations without a prediction, not counted as passes):", "",
                "| experiment | finding | measured |", "|---|---|---|"]
        out += [f"| {_cell(r.experiment)} | {_cell(r.finding)} | {_cell(r.measured)} |"
                for r in findings.itertuples(index=False)]
    out += ["", totals_line(claims, findings)]
    return "\n".join(out)


def render_csv(claims: pd.DataFrame, findings: pd.DataFrame) -> str:
    """One row per record: ``kind`` (claim or finding), experiment, text, predicted, measured,
    verdict (empty for findings)."""
    rows = [{"kind": "claim", "experiment": r.experiment, "text": r.claim,
             "predicted": r.predicted, "measured": r.measured, "verdict": r.verdict}
            for r in claims.itertuples(index=False)]
    rows += [{"kind": "finding", "experiment": r.experiment, "text": r.finding,
              "predicted": "", "measured": r.measured, "verdict": ""}
             for r in findings.itertuples(index=False)]
    buffer = io.StringIO()
    pd.DataFrame(rows, columns=["kind", "experiment", "text", "predicted", "measured",
                                "verdict"]).to_csv(buffer, index=False)
    return buffer.getvalue().rstrip("\n")


def render_json(claims: pd.DataFrame, findings: pd.DataFrame) -> str:
    """``{"claims": [...], "findings": [...], "totals": {...}}``."""
    data = {"claims": claims.to_dict("records"), "findings": findings.to_dict("records"),
            "totals": _totals(claims, findings)}
    return json.dumps(data, indent=2, default=str)


RENDERERS: dict[str, Callable[[pd.DataFrame, pd.DataFrame], str]] = {
    "markdown": render_markdown, "csv": render_csv, "json": render_json,
}


def render(claims: pd.DataFrame, findings: pd.DataFrame, fmt: str = "text", *,
           width: int = 100, max_lines: int | None = 4) -> str:
    """The report in ``fmt`` (one of ``FORMATS``)."""
    if fmt not in FORMATS:
        raise ValueError(f"report format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "text":
        return render_text(claims, findings, width=width, max_lines=max_lines)
    return RENDERERS[fmt](claims, findings)
