"""The records a rollout leaves on Azure resources decode back, and damaged ones are never trusted."""

from __future__ import annotations

from tasks.rollout.tags import LAST_ROLLOUT_TAG, MAX_REASON_CHARS, PREVIOUS_TAG, LastRollout, Previous, last_rollout, previous


def test_previous_round_trips_through_a_tag():
    was = Previous("blue", "r1emulatoracr.azurecr.io/r1-vllm@sha256:" + "a" * 64, "0123456789abcdef", "m:3", "2026-12-06T00:00:00+00:00")
    assert previous({PREVIOUS_TAG: was.encode()}) == was


def test_a_long_reason_is_cut_so_the_tag_stays_small():
    last = LastRollout("rolled back", "x" * 5000, "abcd1234", "green", "blue", "now")
    decoded = last_rollout({LAST_ROLLOUT_TAG: last.encode()})
    assert decoded is not None and len(decoded.reason) == MAX_REASON_CHARS


def test_damaged_or_missing_records_read_as_absent():
    assert previous(None) is None and previous({}) is None
    assert previous({PREVIOUS_TAG: "{not json"}) is None
    assert previous({PREVIOUS_TAG: '{"colour": "blue"}'}) is None  # fields missing
    assert last_rollout({LAST_ROLLOUT_TAG: '["a list"]'}) is None
