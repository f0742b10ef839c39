"""Any request with the lab token, whatever its route and JSON body, is answered below 500:
a request that does not fit is the client's error (4xx), never the service's."""

import http.client
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.lab_service import running_service

TOKEN = "fuzz-token-0123456789"
BUNDLE = "0" * 32
KEYS = ["agent", "devices", "lease_s", "reason", "result", "bundle", "device", "runtime", "runs", "threads",
        "warmup", "warmup_s", "delegate", "cluster", "tag", "model", "poll_s", "unreachable_s"]  # fmt: skip
ROUTES = [("POST", "/v1/jobs"), ("GET", "/v1/jobs"), ("GET", "/v1/jobs?status=done&tag=x"), ("POST", "/v1/lease"),
          ("POST", "/v1/jobs/1/renew"), ("POST", "/v1/jobs/1/finish"), ("POST", "/v1/jobs/1/fail"),
          ("POST", "/v1/jobs/2/release"), ("POST", "/v1/jobs/x/finish"), ("POST", "/v1/jobs/99/renew"),
          ("PUT", f"/v1/bundles/{BUNDLE}/manifest.json"), ("GET", f"/v1/bundles/{BUNDLE}/model.onnx"),
          ("GET", "/v1/jobs/1/result"), ("GET", "/v1/jobs/x/result"), ("POST", "/v1/nowhere")]  # fmt: skip

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
bodies = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), values, max_size=6) | values


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with running_service(tmp_path_factory.mktemp("fuzz"), TOKEN, with_jobs=True) as (port, _):
        yield port


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES), body=bodies)
def test_no_request_makes_the_service_fail(service, route, body):
    method, path = route
    connection = http.client.HTTPConnection("127.0.0.1", service, timeout=30)
    try:
        payload = json.dumps(body, allow_nan=True).encode()
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        answer = response.read()
    finally:
        connection.close()
    assert response.status < 500, (method, path, body, answer[:300])
