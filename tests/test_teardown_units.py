"""Teardown's pure decisions: the confirmation, and which autoscale settings belong to the endpoint."""

from __future__ import annotations

from tasks.teardown import confirmation_problem, endpoint_autoscale

EP_ID = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w/onlineEndpoints/ep"


def test_confirm_must_be_the_endpoints_name_exactly():
    assert confirmation_problem("ep", "ep") is None
    assert "none given" in confirmation_problem("", "ep")
    assert "got 'EP'" in confirmation_problem("EP", "ep") and "nothing was changed" in confirmation_problem("x", "ep")


def test_autoscale_of_the_endpoint_by_target_or_by_the_rollouts_naming():
    listed = [("ep-blue-autoscale", None),  # its deployment already gone: found by name
              ("custom", EP_ID.upper() + "/deployments/green"),  # any name, target under the endpoint (any case)
              ("ep2-blue-autoscale", EP_ID + "2/deployments/blue"),  # another endpoint whose name starts alike
              ("other", "/subscriptions/s/other")]
    assert endpoint_autoscale(listed, "ep", EP_ID) == ["custom", "ep-blue-autoscale"]
