"""Hooks for the schemathesis CLI run (tests/test_schemathesis_cli.py): no generated request names
the user the run is signed in as (``PARTICIPANTS_ST_RUNNER``). Revoking its sessions, setting its
password or disabling it would answer every later request 401, and the rest of the run would test
nothing. Schemathesis finds the name in responses (the user list), so it must be filtered out."""

from __future__ import annotations

import os
from typing import Any

import schemathesis

RUNNER = os.environ.get("PARTICIPANTS_ST_RUNNER", "")


def _spares_the_runner(path_parameters: dict[str, Any] | None) -> bool:
    return not RUNNER or (path_parameters or {}).get("username") != RUNNER


@schemathesis.hook
def filter_path_parameters(context: Any, path_parameters: dict[str, Any]) -> bool:
    return _spares_the_runner(path_parameters)


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    return _spares_the_runner(case.path_parameters)
