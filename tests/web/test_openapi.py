"""``/openapi.json`` against the routes the app really registers, both ways.

Every route of ``edge.app.create_app`` must be in the document with each of its methods,
except the pages for people listed in :data:`PAGES`; every path and method the document
describes must be registered. So a new route without its description fails here, and so
does a description left behind by a route that went away.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sanic import Sanic

from edge.app import create_app
from edge.settings import Settings
from edge.web.openapi import openapi_document
from tests.support.inprocess import InProcessPortal

#: Methods Sanic adds by itself (HEAD beside a static file's GET) or the CORS layer answers.
ADDED_METHODS = frozenset({"HEAD", "OPTIONS"})
#: The keys of an OpenAPI path item that are operations.
OPERATIONS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

#: The routes that are not API: pages for people (HTML, or a download from a page), signed
#: in by the session cookie, their forms checked by CSRF. Every other route is documented.
PAGES = frozenset({
    # home, get a key, log in and out, top up, chat, a shared conversation, the API's docs,
    # the contact form
    "/", "/keys/new", "/login", "/logout", "/topup", "/chat", "/chat/{room}", "/s/{token}",
    "/docs", "/contact",
    # the account page and its forms: make, change, rotate and revoke keys
    "/account", "/account/keys", "/account/keys/{key_id}", "/account/keys/{key_id}/rotate",
    "/account/keys/{key_id}/revoke", "/account/revoke",
    # spend and usage, and the page's CSV download (the API's is /v1/usage/export)
    "/account/activity", "/account/activity.csv",
    # the operator's console: /admin sends the browser to it
    "/admin",
})
#: Static files, one route per file of edge/static (``edge.app._add_static_files``).
STATIC = "/static/"
#: The operator's console: pages under /admin/console (``edge.console``), signed in by their
#: own session; every action they take is an admin API route, documented.
CONSOLE = "/admin/console/"

_SANIC_PARAMETER = re.compile(r"<([^:>]+)(?::[^>]*)?>")
_TEMPLATE_PARAMETER = re.compile(r"\{([^}]*)\}")


def openapi_path(uri: str) -> str:
    """Sanic's ``/v1/models/<name:path>`` as OpenAPI writes it, ``/v1/models/{name}``."""
    return "/" + _SANIC_PARAMETER.sub(r"{\1}", uri).lstrip("/")


def shape(path: str) -> str:
    """A path template without its parameters' names: OpenAPI 3.1 counts templates that
    differ only in those as the same path (the document's ``/v1/jobs/{id}`` is Sanic's
    ``/v1/jobs/<job_id:str>``)."""
    return _TEMPLATE_PARAMETER.sub("{}", path)


def is_page(path: str) -> bool:
    return path.startswith((STATIC, CONSOLE)) or path == CONSOLE.rstrip("/") or \
        shape(path) in {shape(p) for p in PAGES}


def registered_routes(app: Sanic) -> dict[str, set[str]]:
    """Every route of ``app``: its OpenAPI path and methods (without those Sanic adds)."""
    routes: dict[str, set[str]] = {}
    for route in app.router.routes:
        methods = {m.upper() for m in route.methods} - ADDED_METHODS
        routes.setdefault(openapi_path(route.path), set()).update(methods)
    return routes


def documented_routes(document: dict[str, Any]) -> dict[str, set[str]]:
    return {path: {m.upper() for m in item if m in OPERATIONS}
            for path, item in document["paths"].items()}


def by_shape(routes: dict[str, set[str]]) -> dict[tuple[str, str], str]:
    """``(method, shape)`` of each route, to compare; its ``"METHOD path"``, to tell."""
    return {(method, shape(path)): f"{method} {path}"
            for path, methods in routes.items() for method in methods}


def difference(these: dict[str, set[str]], those: dict[str, set[str]]) -> list[str]:
    """The routes of ``these`` that ``those`` lacks (whatever their parameters' names)."""
    ours, theirs = by_shape(these), by_shape(those)
    return sorted(told for key, told in ours.items() if key not in theirs)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sanic]:
    """The app as ``portal serve`` builds it; listing its routes needs no server, Redis or
    database."""
    root: Path = tmp_path_factory.mktemp("openapi")
    settings = Settings(data_dir=str(root), key_pepper="openapi-test-pepper",
                        embedded_redis="never")
    made = create_app(settings, name=f"openapi-{uuid.uuid4().hex[:10]}")
    yield made
    Sanic.unregister_app(made)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi_document("http://portal.test")


def test_every_api_route_is_documented(app: Sanic, document: dict[str, Any]) -> None:
    api = {path: methods for path, methods in registered_routes(app).items()
           if not is_page(path)}
    missing = difference(api, documented_routes(document))
    assert not missing, f"registered but not in the OpenAPI document: {missing}"


def test_every_documented_route_is_registered(app: Sanic, document: dict[str, Any]) -> None:
    extra = difference(documented_routes(document), registered_routes(app))
    assert not extra, f"in the OpenAPI document but not registered: {extra}"


def test_the_pages_left_out_are_registered_and_not_documented(
        app: Sanic, document: dict[str, Any]) -> None:
    registered = {shape(path) for path in registered_routes(app)}
    stale = sorted(page for page in PAGES if shape(page) not in registered)
    assert not stale, f"PAGES lists routes the app no longer registers: {stale}"
    assert any(path.startswith(STATIC) for path in registered_routes(app))
    documented = sorted(path for path in document["paths"] if is_page(path))
    assert not documented, f"pages in the OpenAPI document: {documented}"


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"unresolved $ref {ref}"
        node = node[part]
    return node


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in OPERATIONS:
            if method in item:
                yield path, method, item[method]


def test_every_reference_resolves_and_every_component_is_used(
        document: dict[str, Any]) -> None:
    refs = set(_refs(document))
    for ref in refs:
        _resolve(document, ref)
    components = document["components"]
    defined = {f"#/components/{section}/{name}" for section, entries in components.items()
               if section != "securitySchemes" for name in entries}
    assert not defined - refs, f"components nothing refers to: {sorted(defined - refs)}"


def test_every_operation_is_complete(document: dict[str, Any]) -> None:
    """An id, a summary, a successful answer, declared path parameters and known schemes."""
    schemes = set(document["components"]["securitySchemes"])
    ids, used = [], set()
    for path, method, operation in _operations(document):
        where = f"{method.upper()} {path}"
        ids.append(operation["operationId"])
        assert operation.get("summary"), where
        responses = operation.get("responses")
        assert responses, f"{where} has no responses"
        assert any(status.startswith(("1", "2")) for status in responses), where
        for response in responses.values():
            answer = _resolve(document, response["$ref"]) if "$ref" in response else response
            assert answer.get("description"), where
        parameters = [_resolve(document, p["$ref"]) if "$ref" in p else p
                      for p in operation.get("parameters", [])]
        in_path = {p["name"] for p in parameters if p["in"] == "path"}
        assert in_path == set(_TEMPLATE_PARAMETER.findall(path)), where
        for requirement in operation.get("security", document["security"]):
            assert set(requirement) <= schemes, where
            used |= set(requirement)
    assert len(ids) == len(set(ids)), "operationIds repeat"
    assert used == schemes, f"security schemes no operation uses: {schemes - used}"


def test_shapes_copied_from_the_code_agree_with_it(document: dict[str, Any]) -> None:
    """What the document restates rather than imports (to stay light) is still the code's."""
    from edge.chat.protocol import ROOM_NAME

    socket = document["paths"]["/ws/chat/{room}"]["get"]
    assert socket["parameters"][0]["schema"]["pattern"] == ROOM_NAME.pattern


def test_the_document_is_plain_json(document: dict[str, Any]) -> None:
    assert json.loads(json.dumps(document)) == document  # no tuples, sets or objects


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(document)


async def test_the_portal_serves_this_document(inprocess_portal: InProcessPortal) -> None:
    served = await inprocess_portal.client.get("/openapi.json")
    assert served.status_code == 200
    assert served.headers["content-type"].startswith("application/json")
    assert served.json() == openapi_document(inprocess_portal.settings.effective_public_url)
    assert served.json()["servers"] == [
        {"url": inprocess_portal.settings.effective_public_url}]
