"""The lab service's API as an OpenAPI 3.1 document (served at GET /v1/openapi.json).

Written out by hand rather than generated, so that it says what the service checks: the job's
ranges come from `BenchJob`'s own constants, and a schema-fuzzing test (schemathesis) holds the
service to the status codes, content types and bodies declared here."""

from __future__ import annotations

from typing import Any

from device_bench.records import CLUSTERS, DELEGATES, RUNTIMES

_ERROR = {"$ref": "#/components/schemas/Error"}
_NAME = {"type": "string", "minLength": 1, "maxLength": 200}


def _answer(description: str, schema: dict[str, Any], kind: str = "application/json") -> dict[str, Any]:
    return {"description": description, "content": {kind: {"schema": schema}}}


def _refusals(*codes: int) -> dict[str, Any]:
    reasons = {
        400: "the request does not fit (the reason is in `error`)",
        401: "missing or wrong token",
        403: "this token may not do that (an agent acting outside its own devices or leases)",
        404: "no such bundle, file or job",
        409: "the lease was lost, or a complete bundle holds other bytes",
        411: "Content-Length is required",
        413: "the body is larger than the service accepts",
        503: "the service is busy; try again",
    }
    return {str(code): _answer(reasons[code], _ERROR) for code in (401, 503, *codes)}


def _body(schema: dict[str, Any], kind: str = "application/json") -> dict[str, Any]:
    return {"required": True, "content": {kind: {"schema": schema}}}


_BUNDLE_FILE = [
    {"name": "bundle", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}},
    {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,100}$"},
    },
]
_JOB_ID = [{"name": "job", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}]
_AGENT = {"type": "string", "minLength": 1, "maxLength": 200, "description": "with agent accounts: the token's own"}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "JobRequest": {
        "type": "object",
        "required": ["bundle", "device"],
        "additionalProperties": False,
        "properties": {
            "bundle": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            "device": {"type": "string", "pattern": r"^[A-Za-z0-9_.:\[\]-]{1,200}$"},
            "runtime": {"enum": list(RUNTIMES)},
            "delegate": {
                "type": "string",
                "description": "one of "
                + ", ".join(sorted({d for ds in DELEGATES.values() for d in ds}))
                + ", or external:NAME from the agent host's allowlist (tflite)",
            },
            "threads": {"type": "integer", "minimum": 1, "maximum": 64},
            "precision": {"enum": ["fp32", "fp16", "int8"]},
            "profile": {"type": "boolean", "description": "also record per-op times"},
            "cluster": {"enum": list(CLUSTERS)},
            "warmup": {"type": "integer", "minimum": 0, "maximum": 1000},
            "runs": {"type": "integer", "minimum": 1, "maximum": 100_000},
            "warmup_s": {"type": "number", "minimum": 0, "maximum": 600},
            "max_temp_c": {"type": "integer", "minimum": 20, "maximum": 110},
            "max_wait_s": {"type": "integer", "minimum": 0, "maximum": 7200},
            "poll_s": {"type": "number", "minimum": 0.05, "maximum": 60},
            "unreachable_s": {"type": "number", "minimum": 1, "maximum": 3600},
            "model": {"type": "string"},
            "tag": {"type": "string", "maxLength": 200},
        },
    },
    "Job": {
        "type": "object",
        "required": ["id", "created", "spec", "status", "device", "attempts"],
        "properties": {
            "id": {"type": "integer"},
            "created": {"type": "string"},
            "spec": {"type": "object"},
            "status": {"enum": ["queued", "running", "done", "failed"]},
            "reason": {"type": ["string", "null"]},
            "device": {"type": "string"},
            "tag": {"type": ["string", "null"]},
            "agent": {"type": ["string", "null"]},
            "lease_expires": {"type": ["number", "null"]},
            "attempts": {"type": "integer"},
        },
    },
    "Result": {
        "type": "object",
        "required": [
            "device",
            "runtime",
            "delegate",
            "threads",
            "bundle",
            "model_sha256",
            "samples_ms",
            "stats",
            "init_ms",
            "warmup_runs",
        ],
        "properties": {
            "device": {"type": "string"},
            "runtime": {"type": "string"},
            "delegate": {"type": "string"},
            "threads": {"type": "integer"},
            "bundle": {"type": "string"},
            "model_sha256": {"type": "string"},
            "samples_ms": {"type": "array", "items": {"type": "number"}},
            "stats": {"type": "object", "required": ["n", "median_ms", "p90_ms", "p95_ms", "min_ms", "mean_ms"]},
            "init_ms": {"type": "number"},
            "warmup_runs": {"type": "integer"},
            "device_state": {"type": "object"},
            "tool_versions": {"type": "object"},
            "flags": {"type": "array", "items": {"type": "string"}},
            "created": {"type": "string"},
            "precision": {"type": "string"},
            "output_check": {"type": ["object", "null"], "required": ["ok"]},
        },
    },
}


def _action(summary: str, extra: dict[str, Any], required: list[str]) -> dict[str, Any]:
    body = {"type": "object", "required": required, "properties": {"agent": _AGENT, **extra}}
    return {
        "summary": summary,
        "parameters": _JOB_ID,
        "requestBody": _body(body),
        "responses": {
            "200": _answer("done", {"type": "object", "required": ["id", "action"]}),
            **_refusals(400, 403, 404, 409, 411, 413),
        },
    }


_LEASE_S = {"type": "number", "exclusiveMinimum": 0, "description": "at most the service's max_lease_s"}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "CoroNet lab service", "version": "1"},
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
    },
    "security": [{"token": []}],
    "paths": {
        "/v1/openapi.json": {
            "get": {
                "summary": "this document",
                "responses": {"200": _answer("OpenAPI", {"type": "object"}), **_refusals()},
            },
        },
        "/v1/bundles/{bundle}/{name}": {
            "parameters": _BUNDLE_FILE,
            "put": {
                "summary": "upload a bundle file (model files first, manifest.json last)",
                "requestBody": _body({"type": "string", "format": "binary"}, "application/octet-stream"),
                "responses": {
                    "201": _answer("stored, or already there", {"type": "object", "required": ["bundle", "file"]}),
                    **_refusals(400, 403, 409, 411, 413),
                },
            },
            "get": {
                "summary": "a file of a complete bundle",
                "responses": {
                    "200": _answer("the file", {"type": "string", "format": "binary"}, "application/octet-stream"),
                    **_refusals(400, 404),
                },
            },
        },
        "/v1/jobs": {
            "post": {
                "summary": "queue a bench job of an uploaded bundle",
                "requestBody": _body({"$ref": "#/components/schemas/JobRequest"}),
                "responses": {
                    "201": _answer(
                        "queued", {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}}
                    ),
                    **_refusals(400, 403, 411, 413),
                },
            },
            "get": {
                "summary": "the jobs, optionally of one status and tag",
                "parameters": [
                    {"name": "status", "in": "query", "schema": {"type": "string"}},
                    {"name": "tag", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": _answer(
                        "the jobs",
                        {
                            "type": "object",
                            "required": ["jobs"],
                            "properties": {"jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}}},
                        },
                    ),
                    **_refusals(400, 403),
                },
            },
        },
        "/v1/lease": {
            "post": {
                "summary": "lease the oldest queued job of these devices",
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["devices"],
                        "properties": {
                            "agent": _AGENT,
                            "devices": {"type": "array", "minItems": 1, "items": _NAME},
                            "lease_s": _LEASE_S,
                        },
                    }
                ),
                "responses": {
                    "200": _answer(
                        "a job, or null when none is queued",
                        {
                            "type": "object",
                            "required": ["job"],
                            "properties": {"job": {"anyOf": [{"$ref": "#/components/schemas/Job"}, {"type": "null"}]}},
                        },
                    ),
                    **_refusals(400, 403, 411, 413),
                },
            },
        },
        "/v1/jobs/{job}/result": {
            "get": {
                "summary": "one job, with its result once it is done",
                "parameters": _JOB_ID,
                "responses": {
                    "200": _answer(
                        "the job, and its result (null until it is done)",
                        {
                            "type": "object",
                            "required": ["job", "result"],
                            "properties": {
                                "job": {"$ref": "#/components/schemas/Job"},
                                "result": {"anyOf": [{"$ref": "#/components/schemas/Result"}, {"type": "null"}]},
                            },
                        },
                    ),
                    **_refusals(403, 404),
                },
            },
        },
        "/v1/jobs/{job}/renew": {"post": _action("extend a lease", {"lease_s": _LEASE_S}, [])},
        "/v1/jobs/{job}/release": {"post": _action("give a leased job back to the queue", {}, [])},
        "/v1/jobs/{job}/fail": {"post": _action("a leased job failed", {"reason": {"type": "string"}}, ["reason"])},
        "/v1/jobs/{job}/finish": {
            "post": _action("a leased job's result", {"result": {"$ref": "#/components/schemas/Result"}}, ["result"])
        },
    },
}
