"""`lottery-lab report`: readable in 80 and 120 columns, findings apart, paste-ready formats."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from experiments import cli, engine
from experiments.report import render

LONG = "; ".join(f"r={r}: slope {-1.5 - r / 100:.3f} [-2.1, -0.9]" for r in range(0, 400, 10))


def _tables():
    claims = pd.DataFrame([
        {"experiment": "alpha", "claim": "the boundary falls in sqrt(r) (Theorem 1)",
         "predicted": "slope < 0", "measured": LONG, "verdict": "pass"},
        {"experiment": "alpha", "claim": "a | pipe in the text", "predicted": 1.0,
         "measured": 2.5, "verdict": "fail"},
        {"experiment": "beta", "claim": "N* is linear in r", "predicted": "log-log slope = 1",
         "measured": "1.00 [0.91, 1.09]", "verdict": "pass"},
    ], columns=["experiment", *engine.CLAIM_KEYS])
    findings = pd.DataFrame([{"experiment": "alpha", "finding": "beyond the edge runs are slow",
                              "measured": "127 of 142 slow"}],
                            columns=["experiment", *engine.FINDING_KEYS])
    return claims, findings


@pytest.mark.parametrize("width", [80, 120])
def test_text_fits_the_terminal_and_keeps_findings_apart(width):
    claims, findings = _tables()
    text = render(claims, findings, width=width)
    assert max(len(line) for line in text.splitlines()) <= width
    assert "3 claims: 2 pass, 1 fail (2 experiments); 1 findings, not counted" in text
    assert text.index("Findings") > text.index("N* is linear in r")
    assert "[FAIL] a | pipe in the text" in text and "alpha: 1 of 2 claims pass" in text
    measured = [line for line in text.splitlines() if line.strip().startswith("measured:")]
    assert measured[0].strip().startswith("measured:  r=0: slope")
    assert "…" in text  # the long measurement is cut at four lines
    whole = render(claims, findings, width=width, max_lines=None)
    assert "r=390" in whole and "r=390" not in text


def test_markdown_csv_and_json_hold_every_record_whole():
    claims, findings = _tables()
    md = render(claims, findings, "markdown")
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(rows) == 2 + 3 + 1  # two headers, three claims, one finding
    assert "a \\| pipe" in md and LONG in md

    table = pd.read_csv(io.StringIO(render(claims, findings, "csv")))
    assert list(table["kind"]) == ["claim", "claim", "claim", "finding"]
    assert table.loc[0, "measured"] == LONG and pd.isna(table.loc[3, "verdict"])

    data = json.loads(render(claims, findings, "json"))
    assert data["totals"] == {"claims": 3, "pass": 2, "fail": 1, "findings": 1, "experiments": 2}
    assert data["findings"][0]["finding"] == "beyond the edge runs are slow"


def test_unknown_format_is_refused_in_one_line():
    claims, findings = _tables()
    with pytest.raises(ValueError, match="report format must be one of text, markdown, csv, json"):
        render(claims, findings, "html")


def test_report_command_formats(capsys, tmp_path):
    path = tmp_path / "results" / "alpha" / "validate.json"
    path.parent.mkdir(parents=True)
    claims, findings = _tables()
    alpha = claims[claims["experiment"] == "alpha"].drop(columns="experiment")
    path.write_text(json.dumps({"claims": alpha.to_dict("records"),
                                "findings": findings.drop(columns="experiment")
                                .to_dict("records")}))
    assert cli.main(["report", "--out", str(tmp_path), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totals"]["claims"] == 2 and data["totals"]["findings"] == 1
    assert cli.main(["report", "--out", str(tmp_path), "--width", "80"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert cli.main(["report", "--out", str(tmp_path), "--format", "pdf"]) == 2
    assert "invalid choice: 'pdf'" in capsys.readouterr().err
