"""docs/openapi.yaml: a valid OpenAPI 3.1 document, served at /__api__, in step with the code.

Every endpoint test's answers are checked against the document by the hook in
``Client.fetch`` (``tests/openapi_check.py``); this file checks the document
itself and the hook's own verdicts.
"""

import json

import pytest
import yaml
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

from addonreg.errors import ERRNO
from tests.conftest import body
from tests.openapi_check import (
    DOCUMENT_PATH,
    ContractViolation,
    check_response,
    document,
)


def document_bytes() -> bytes:
    with open(DOCUMENT_PATH, "rb") as fh:
        return fh.read()


def test_document_is_valid_openapi_3_1():
    spec, _ = read_from_filename(DOCUMENT_PATH)
    validate(spec)
    assert spec["openapi"].startswith("3.1")


def test_every_route_and_errno_is_documented():
    paths = set(document()["paths"])
    assert {
        "/v1/addons/{addon_id}/files/{sha256}",
        "/v1/addons/{addon_id}/files",
        "/v1/lookup",
        "/v1/changes",
        "/v1/",
        "/v1/registrations",
        "/v1/jobs/{job_id}",
        "/v1/filter",
        "/v1/filter/{file}",
        "/addon",
        "/addons",
        "/hash",
        "/__lbheartbeat__",
        "/__heartbeat__",
        "/__version__",
        "/__metrics__",
        "/__api__",
    } == paths
    errnos = {item["const"] for item in document()["components"]["schemas"]["Errno"]["oneOf"]}
    assert errnos == {int(e) for e in ERRNO}


@pytest.mark.parametrize("storage_url", ["memory"], indirect=True)
async def test_served_as_yaml_and_json_with_validators(service, client):
    r = await client.get("/__api__")
    assert r.code == 200 and r.headers["Content-Type"].startswith("application/yaml")
    assert r.body == document_bytes()
    assert r.headers["Vary"] == "Accept" and r.headers["Cache-Control"].startswith("public")
    as_json = await client.get("/__api__", headers={"Accept": "application/json"})
    assert as_json.headers["Content-Type"].startswith("application/json")
    assert body(as_json) == yaml.safe_load(r.body)
    assert as_json.headers["ETag"] != r.headers["ETag"]
    again = await client.get("/__api__", headers={"If-None-Match": r.headers["ETag"]})
    assert again.code == 304 and again.body == b""
    head = await client.fetch("HEAD", "/__api__")
    assert head.code == 200 and head.headers["ETag"] == r.headers["ETag"]


def test_the_hook_refuses_what_the_document_does_not_allow():
    url = "http://127.0.0.1:1/v1/addons/a@b/files/" + "a" * 64
    json_type = {"Content-Type": "application/json"}
    with pytest.raises(ContractViolation, match="required property"):
        check_response(
            "GET",
            url,
            {},
            None,
            200,
            dict(json_type, ETag='"1"', **{"Cache-Control": "public, max-age=1"}),
            b"{}",
        )
    with pytest.raises(ContractViolation, match="418"):
        check_response("GET", url, {}, None, 418, json_type, b"{}")
    error = json.dumps({"code": 404, "errno": 111, "error": "Not Found", "message": "no"})
    check_response("GET", "http://127.0.0.1:1/nowhere", {}, None, 404, json_type, error.encode())
    with pytest.raises(ContractViolation, match="not one of"):
        check_response("GET", "http://127.0.0.1:1/nowhere", {}, None, 200, json_type, b"{}")
    with pytest.raises(ContractViolation, match="not the Error body"):
        check_response("DELETE", "http://127.0.0.1:1/v1/", {}, None, 405, json_type, b"{}")
