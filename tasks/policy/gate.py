"""The security policy gate: run every rule over a spec bundle, then apply explicit waivers.

A waiver names one rule id with a reason and an optional expiry date. Waived findings stay in the
report, marked; an expired waiver no longer waives and is itself an error finding. Nothing here has
side effects, so the rollout's preflight and the plan flow call the same functions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import date

from tasks.policy.bundle import SpecBundle
from tasks.policy.rules import RULES, RULES_BY_ID
from tasks.settings import SettingsError, Waiver

WAIVER_EXPIRED = "waiver-expired"


@dataclass(frozen=True)
class Finding:
    rule: str
    category: str
    severity: str
    message: str
    remediation: str
    waived: bool = False
    waiver_reason: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def check(bundle: SpecBundle) -> list[Finding]:
    return [
        Finding(rule.id, rule.category, rule.severity, message, rule.remediation)
        for rule in RULES
        for message in rule.check(bundle)
    ]


def validate_waivers(waivers: list[Waiver]) -> None:
    unknown = [w.rule for w in waivers if w.rule not in RULES_BY_ID]
    if unknown:
        raise SettingsError([f"R1_POLICY_WAIVERS: unknown rule id(s) {unknown}; known: {sorted(RULES_BY_ID)}"])


def apply_waivers(findings: list[Finding], waivers: list[Waiver], today: date) -> list[Finding]:
    validate_waivers(waivers)
    active = {w.rule: w for w in waivers if w.expires is None or w.expires >= today}
    expired = [
        Finding(
            WAIVER_EXPIRED,
            RULES_BY_ID[w.rule].category,
            "error",
            f"the waiver for {w.rule} expired on {w.expires.isoformat()} (reason given: {w.reason})",
            f"Fix {w.rule}, or renew the waiver in R1_POLICY_WAIVERS with a new expiry date.",
        )
        for w in waivers
        if w.expires is not None and w.expires < today
    ]
    waived = [
        replace(f, waived=True, waiver_reason=active[f.rule].reason) if f.rule in active else f
        for f in findings
    ]
    return waived + expired


def gate(bundle: SpecBundle, waivers: list[Waiver], today: date) -> list[Finding]:
    return apply_waivers(check(bundle), waivers, today)


def blocking(findings: list[Finding]) -> list[Finding]:
    """Unwaived errors: any of these stops a rollout (plan exit code 1)."""
    return [f for f in findings if f.severity == "error" and not f.waived]


# What a Dockerfile decides: the image build is refused on these before anything is uploaded.
IMAGE_CATEGORIES = frozenset({"image", "runtime-hardening", "telemetry", "model-supply"})


def refusal(findings: list[Finding], categories: frozenset[str] | None = None) -> str | None:
    """One line naming the blocking findings (only those of ``categories`` when given), or None."""
    errors = [f for f in blocking(findings) if categories is None or f.category in categories]
    return "policy gate: " + "; ".join(f"{f.rule}: {f.message}" for f in errors) if errors else None
