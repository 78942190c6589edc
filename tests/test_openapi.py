"""The OpenAPI document: valid 3.1, complete, and true. ``schemathesis`` fuzzes every operation of
the running service (demo data loaded) and checks that nothing answers 5xx and every answer matches
the document. Bounded: a few examples per operation, well under two minutes in all."""

from __future__ import annotations

import asyncio
from typing import Any

from openapi_spec_validator import validate

from service.dev.demo import DEMO_SITES, DEMO_STUDY, seed_demo
from service.web.openapi import GENERIC
from tests.world import expect

MAX_EXAMPLES = 15


async def test_document_is_valid_openapi_31_and_lists_every_route(client, pool):
    doc = await expect(await client.get("/openapi.json"), 200)
    validate(doc)  # raises on anything invalid
    assert doc["openapi"] == "3.1.0"
    routes = {
        (r.resource.canonical, r.method.lower())
        for r in client.app.router.routes()
        if r.method not in ("HEAD", "OPTIONS")
        and r.resource is not None
        and not (r.name or "").startswith("console.")  # HTML pages, not the API
    }
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert documented == routes
    undocumented = [
        f"{m} {p}"
        for p, ops in doc["paths"].items()
        for m, op in ops.items()
        if op["summary"] == GENERIC.summary
    ]
    assert undocumented == []  # every handler has its entry in service/openapi.py
    webhook = doc["paths"]["/admin/api/webhooks"]["post"]
    assert webhook["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/WebhookIn"
    }
    assert set(doc["webhooks"]) == {"job.completed", "job.failed"}
    assert doc["paths"]["/healthz"]["get"]["security"] == []


def _check_operation(strategy: Any, base_url: str, headers: dict[str, str], checks: list[Any]) -> None:
    from hypothesis import HealthCheck, Phase, given, settings

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])  # fmt: skip
    @given(case=strategy)
    def run(case: Any) -> None:
        case.call_and_validate(base_url=base_url, headers=headers, checks=checks)

    run()


def _fuzz(doc: dict[str, Any], base_url: str, tokens: dict[str, str]) -> list[str]:
    """Runs in a thread: schemathesis is synchronous, the server lives on the test's event loop."""
    import schemathesis
    from hypothesis import strategies as st
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
        content_type_conformance,
    ]
    schema = schemathesis.openapi.from_dict(doc)
    failures: list[str] = []
    for result in schema.get_all_operations():
        op = result.ok()
        token = tokens["admin"] if op.path.startswith("/admin/") else tokens["user"]
        demo = {"studyOID": DEMO_STUDY, "siteOID": DEMO_SITES[0]}
        fixed = {k: v for k, v in demo.items() if "{" + k + "}" in op.path}
        strategies = [op.as_strategy(mode) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
        if fixed:  # some cases reach the demo study and site, not only 404s
            strategies.append(op.as_strategy(path_parameters=fixed))
        strategy = st.one_of(*strategies)

        try:
            _check_operation(strategy, base_url, {"Authorization": f"Bearer {token}"}, checks)
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises a FailureGroup; collect all
            failures.append(f"{op.method.upper()} {op.path}: {str(exc)[:1500]}")
    return failures


async def test_schemathesis_finds_no_5xx_and_no_answer_off_the_schema(client, world, pool):
    async with pool.acquire() as conn:
        await seed_demo(conn)
    doc = await expect(await client.get("/openapi.json"), 200)
    tokens = {"admin": world.token("admin"), "user": world.token("crc_a")}
    base_url = str(client.make_url("")).rstrip("/")
    failures = await asyncio.wait_for(asyncio.to_thread(_fuzz, doc, base_url, tokens), timeout=150)
    assert failures == [], "\n\n".join(failures)
    # The fuzzing really reached the service, across its operations.
    metrics = await expect(await client.get("/metrics"), 200)
    reached = {line.split('route="')[1].split('"')[0] for line in metrics.splitlines()
               if line.startswith("participants_http_requests_total{")}  # fmt: skip
    assert len(reached) >= len(doc["paths"]) - 2, sorted(reached)


async def test_a_drifted_schema_is_caught(client, world, pool):
    """The fuzz test can fail: a document that lies about one answer is reported."""
    doc = await expect(await client.get("/openapi.json"), 200)
    doc["components"]["schemas"]["Health"]["properties"]["status"] = {"const": "fine"}
    base_url = str(client.make_url("")).rstrip("/")
    only = {"paths": {"/healthz": doc["paths"]["/healthz"]}}
    failures = await asyncio.to_thread(_fuzz, {**doc, **only}, base_url, {"admin": "", "user": ""})
    assert len(failures) == 1 and failures[0].startswith("GET /healthz"), failures


async def test_schemas_use_json_schema_keywords_only(client, pool):
    """Bounds written as pydantic's own ``ge``/``le``/``gt``/``lt`` are no bounds to a client (a
    before-validator makes pydantic write them so): every bound is ``minimum``/``maximum``."""
    doc = await expect(await client.get("/openapi.json"), 200)
    found: list[str] = []

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            if "type" in node or "anyOf" in node:
                found.extend(f"{path}.{k}" for k in ("ge", "le", "gt", "lt") if k in node)
            for key, value in node.items():
                if key != "properties":
                    walk(value, f"{path}.{key}")
                else:
                    for name, sub in value.items():
                        walk(sub, f"{path}.properties.{name}")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")

    walk(doc, "$")
    assert found == []
