"""The report files: per-request JSONL, summary JSON, markdown with verdict and warnings, a real PNG."""

import json

from tasks.loadtest.metrics import summarise
from tasks.loadtest.report import markdown, write_report
from tasks.settings import Slo
from tests.loadtest_support import make_record

INFO = {"started_at": "2026-11-27T10:00:00.000+00:00", "base_url": "http://127.0.0.1:1", "mode": "closed loop"}


def test_report_folder_holds_all_four_files_consistent_with_the_summary(tmp_path):
    records = [make_record(i, sent_s=i * 0.1) for i in range(30)] + [make_record(30, error="http_503", sent_s=3.0)]
    records[0].warmup = True
    summary = summarise(records, Slo(min_requests=10))
    folder = write_report(records, summary, INFO, tmp_path)
    assert folder.parent == tmp_path and folder.name.startswith("loadtest-") and folder.name.endswith("Z")
    rows = [json.loads(line) for line in (folder / "requests.jsonl").read_text().splitlines()]
    assert len(rows) == 31 and rows[0]["warmup"] and rows[-1]["error"] == "http_503"
    assert rows[1]["ttft_ms"] == 100.0 and rows[1]["tpot_ms"] == 10.0
    saved = json.loads((folder / "summary.json").read_text())
    assert saved["run"] == INFO and saved["requests_total"] == 30 and saved["requests_failed"] == 1
    assert (folder / "loadtest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (folder / "summary.md").read_text()
    assert md == markdown(summary, INFO)
    assert "**SLO**: FAIL" in md and "error rate 3.33% > 1.00%" in md  # 1 of 30 measured failed
    assert "## Warnings" in md and "1 of 30 requests failed" in md
    assert "| ttft_ms | 100.00 |" in md and "`tpot_ms` = (last choice event" in md


def test_a_run_where_everything_failed_still_reports(tmp_path):
    records = [make_record(i, error="connect_error", deployment=None) for i in range(3)]
    summary = summarise(records, Slo(min_requests=1))
    folder = write_report(records, summary, INFO, tmp_path)
    assert "| ttft_ms | – |" in (folder / "summary.md").read_text()
    assert summary["slo"]["status"] == "fail" and summary["errors_by_class"] == {"connect_error": 3}
