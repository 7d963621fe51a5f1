"""Which failures of an ARM call are worth a task-level retry (azure-core has already retried each call)."""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import HttpResponseError, ServiceRequestError

RETRIED_STATUS = (429, 500, 502, 503, 504)


def transient(task: Any, run: Any, state: Any) -> bool:
    """A Prefect ``retry_condition_fn``: retry on ARM throttling and outages only, never on a verdict."""
    try:
        state.result()
    except HttpResponseError as err:
        return err.status_code in RETRIED_STATUS
    except ServiceRequestError:
        return True
    except Exception:
        return False
    return False
