"""schemathesis against the lab service's OpenAPI document, over real HTTP on localhost: every
operation, with bodies and parameters drawn from the schema (and beside it), is answered below
500, with a status code, content type and body that the document declares."""

import json
import urllib.request

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from device_bench.openapi import OPENAPI
from tests.lab_service import running_service

TOKEN = "schema-token-0123456789"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

schema = schemathesis.openapi.from_dict(OPENAPI)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with running_service(tmp_path_factory.mktemp("schema"), TOKEN, with_jobs=True) as (port, _):
        yield f"http://127.0.0.1:{port}"


def test_the_service_serves_its_own_schema(service):
    request = urllib.request.Request(f"{service}/v1/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read()) == json.loads(json.dumps(OPENAPI))


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_keeps_to_the_schema(service, case):
    response = case.call(base_url=service, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    case.validate_response(response, checks=CHECKS)


@schema.parametrize()
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
def test_without_the_token_every_operation_is_401(service, case):
    response = case.call(base_url=service, headers={"Authorization": "Bearer wrong"}, timeout=30)
    assert response.status_code == 401, (case.method, case.path, response.text[:200])
    case.validate_response(response, checks=CHECKS)
