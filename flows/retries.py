"""When a task is tried again: infrastructure hiccups, never a failure the user
must fix (an EdgeloopError: a bad input, a refused release)."""

from __future__ import annotations

from components.errors import EdgeloopError


def transient(_task: object, _run: object, state: object) -> bool:
    """A Prefect `retry_condition_fn`: retry unless the task raised an
    EdgeloopError."""
    try:
        state.result()  # type: ignore[attr-defined]
    except EdgeloopError:
        return False
    except Exception:  # noqa: BLE001 - anything else may be transient
        return True
    return False
