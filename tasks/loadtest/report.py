"""A load run's report: per-request JSONL, summary JSON, markdown, a PNG, and Prefect artifacts.

Everything lands in ``<reports_dir>/loadtest-<UTC timestamp>/`` through ``tasks.reports``. Records
hold no prompt text, no answer text and no credentials, only timings, counts and classes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

from tasks.loadtest.metrics import PERCENTILES
from tasks.loadtest.record import RequestRecord
from tasks.reports import publish_markdown, publish_table, save_png, write_json, write_text

LATENCIES = ("ttft_ms", "ttfa_ms", "tpot_ms", "e2e_ms", "ttft_from_intended_ms", "e2e_from_intended_ms",
             "send_lag_ms", "chunk_gap_ms")
TOKENS = ("prompt_tokens", "output_tokens", "reasoning_tokens", "answer_tokens")


def report_dir(reports_dir: Path, now: datetime | None = None) -> Path:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%f")[:-3] + "Z"
    return reports_dir / f"loadtest-{stamp}"


def metric_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per distribution: the table artifact and the markdown table share it."""
    rows = []
    for name in LATENCIES + TOKENS:
        s = summary[name]
        rows.append({"metric": name, **{k: s[k] for k in [f"p{p}" for p in PERCENTILES] + ["mean", "max", "n"]}})
    return rows


def markdown(summary: dict[str, Any], run_info: dict[str, Any]) -> str:
    def cell(v: Any) -> str:
        return "–" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))

    rows = metric_rows(summary)
    header = list(rows[0])
    lines = [
        f"# Load test {run_info['started_at']}",
        "",
        " · ".join(f"**{k}** {cell(v)}" for k, v in run_info.items() if k != "started_at"),
        "",
        f"**SLO**: {summary['slo']['status'].upper() if summary['slo'] else 'not judged'}",
        *[f"- {r}" for r in (summary["slo"] or {}).get("reasons", [])],
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *["| " + " | ".join(cell(r[k]) for k in header) + " |" for r in rows],
        "",
        "| aggregate | value |",
        "|---|---|",
    ]
    for key in ("requests_total", "requests_completed", "requests_failed", "error_rate", "requests_per_s",
                "output_tokens_per_s", "total_tokens_per_s", "target_rate", "scheduled_rate", "achieved_rate",
                "goodput", "goodput_requests_per_s", "measurement_window_s"):
        lines.append(f"| {key} | {cell(summary[key])} |")
    conc = summary["achieved_concurrency"]
    lines.append(f"| achieved_concurrency (mean / max) | {cell(conc['mean'])} / {cell(conc['max'])} |")
    lines.append(f"| errors_by_class | {summary['errors_by_class'] or '–'} |")
    lines.append(f"| served_by | {summary['served_by']} |")
    if summary["warnings"]:
        lines += ["", "## Warnings", *[f"- {w}" for w in summary["warnings"]]]
    lines += ["", "## Formulas", *[f"- `{k}` = {v}" for k, v in summary["formulas"].items()]]
    return "\n".join(lines) + "\n"


def plot(records: list[RequestRecord], path: Path) -> Path:
    """Latency distributions (ECDFs) and, over time, completions, output tokens and errors per second."""
    measured = [r for r in records if not r.warmup]
    ok = [r for r in measured if r.ok]
    fig = Figure(figsize=(16, 4.5))
    ax_lat, ax_req, ax_tok = fig.subplots(1, 3)
    for label, values in (("TTFT", [r.ttft_s for r in ok]), ("TTFA", [r.ttfa_s for r in ok]),
                          ("E2E", [r.e2e_s for r in ok]), ("E2E from intended", [r.e2e_from_intended_s for r in ok]),
                          ("TPOT", [r.tpot_s for r in ok])):
        xs = np.sort([v * 1000 for v in values if v is not None])
        if len(xs):
            ax_lat.step(xs, np.arange(1, len(xs) + 1) / len(xs), where="post", label=label)
    ax_lat.set(xscale="log", xlabel="ms", ylabel="share of requests ≤ x", title="Latency distributions")
    ax_lat.grid(alpha=0.3)
    if ax_lat.lines:
        ax_lat.legend(fontsize=8)
    if measured:
        start = min(r.sent_s for r in measured)
        edges = np.arange(0, max(r.end_s for r in measured) - start + 1.0, 1.0)
        ends_ok = [r.end_s - start for r in ok]
        ax_req.hist(ends_ok, bins=edges, histtype="step", label="completed")
        ax_req.hist([r.end_s - start for r in measured if not r.ok], bins=edges, histtype="step", color="red",
                    label="errors")
        ax_req.legend(fontsize=8)
        ax_tok.hist(ends_ok, bins=edges, weights=[r.completion_tokens or 0 for r in ok], histtype="step", color="grey")
    ax_req.set(xlabel="seconds since first send", ylabel="per second", title="Requests over time")
    ax_tok.set(xlabel="seconds since first send", ylabel="tokens per second", title="Output tokens over time")
    return save_png(fig, path)


def write_report(records: list[RequestRecord], summary: dict[str, Any], run_info: dict[str, Any],
                 reports_dir: Path) -> Path:
    """Write all report files and publish the markdown and metric table as artifacts; returns the folder."""
    out = report_dir(reports_dir)
    write_text(out / "requests.jsonl", "".join(json.dumps(r.to_json()) + "\n" for r in records))
    write_json(out / "summary.json", {"run": run_info, **summary})
    md = markdown(summary, run_info)
    write_text(out / "summary.md", md)
    plot(records, out / "loadtest.png")
    publish_markdown("loadtest-summary", md, description=f"Load test {run_info['started_at']}")
    publish_table("loadtest-metrics", metric_rows(summary), description="Load test distributions")
    return out
