"""The plan report: one JSON-able dict (what ``--json`` prints) and its markdown rendering.

Values of environment variables that look like secrets are replaced before anything is written, so
a literal secret a user put in a spec (which the gate flags) never reaches a report or an artifact.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from tasks.policy.gate import Finding, blocking
from tasks.policy.bundle import SpecBundle
from tasks.policy.rules import SECRET_NAME, secret_flags
from tasks.settings import Settings
from tasks.plan.specs import rendered_files

REDACTED = "***"


def secret_values(bundle: SpecBundle) -> list[str]:
    places = (bundle.deployment_env, bundle.dockerfile.env, bundle.dockerfile.build_args)
    values = {v for env in places for k, v in env.items() if SECRET_NAME.match(k) and len(v) >= 4}
    values.update(v for v in secret_flags(bundle).values() if len(v) >= 4)
    return sorted(values, key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    for value in secrets:
        text = text.replace(value, REDACTED)
    return text


def build_report(settings: Settings, bundle: SpecBundle, findings: list[Finding]) -> dict[str, Any]:
    secrets = secret_values(bundle)
    return {
        "ok": not blocking(findings),
        "findings": [
            {**f.as_dict(), "message": redact(f.message, secrets)} for f in findings
        ],
        "capacity": {**bundle.capacity.as_dict(), "configured": asdict(bundle.shape)},
        "specs": {
            "sources": bundle.sources,
            "rendered": {path: redact(text, secrets) for path, text in rendered_files(settings).items()},
        },
    }


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(report: dict[str, Any]) -> str:
    findings = report["findings"]
    errors = [f for f in findings if f["severity"] == "error" and not f["waived"]]
    verdict = "**PASS**: no unwaived error findings" if report["ok"] else f"**BLOCKED**: {len(errors)} error finding(s)"
    lines = [
        "# Rollout plan",
        "",
        verdict,
        "",
        "Sources: " + ", ".join(f"{k} = `{v}`" for k, v in report["specs"]["sources"].items()),
        "",
        "## Policy findings",
        "",
    ]
    if findings:
        lines += ["| severity | rule | category | message | remediation | waived |", "|---|---|---|---|---|---|"]
        lines += [
            f"| {f['severity']} | `{f['rule']}` | {f['category']} | {_cell(f['message'])} | "
            f"{_cell(f['remediation'])} | {_cell(f['waiver_reason']) if f['waived'] else ''} |"
            for f in findings
        ]
    else:
        lines.append("None.")
    cap = report["capacity"]
    lines += ["", "## Capacity", "", "| quantity | value |", "|---|---|"]
    lines += [f"| {k} | {_cell(v)} |" for k, v in cap.items() if k != "configured"]
    lines += ["", "Configured: " + ", ".join(f"{k}={v}" for k, v in cap["configured"].items()), ""]
    return "\n".join(lines)
