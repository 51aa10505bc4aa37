"""schemathesis over the OpenAPI document, in-process (ASGI), as an admin on each backend:
no input, valid (positive) or not (negative), makes a 5xx, and every response (status,
content type, body, headers) matches the document."""

from __future__ import annotations

import itertools

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import ApiEnv

#: Examples per operation: about a minute for both backends on a loaded 2-core machine.
EXAMPLES = 30
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def test_no_5xx_and_responses_match_the_schema(api_env: ApiEnv) -> None:
    for _ in range(3):  # existing ids, so show/cancel/retry meet real tasks too
        api_env.task()
    schema = schemathesis.openapi.from_asgi(
        "/api/v1/openapi.json", api_env.api, headers=api_env.admin
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation, mode in itertools.product(operations, GenerationMode):

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=api_env.admin, checks=CHECKS)

        try:
            fuzz()
        except Unsatisfiable:
            # No invalid input exists for an operation without parameters or body.
            assert mode is GenerationMode.NEGATIVE, operation.label
