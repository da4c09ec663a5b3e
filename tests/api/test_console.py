"""`/console` over HTTP: its files, their headers, no key needed, off with `CONSOLE=false`, and
shipped in the wheel. What the page does in a browser is tests/api/test_console_browser.py's."""

from __future__ import annotations

import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from pydantic import SecretStr

from app.api.routes.console import load_assets
from tests.api.conftest import ClientFactory
from tests.conftest import ROOT, in_ci

pytestmark = pytest.mark.anyio

CONSOLE_DIR = ROOT / "app" / "api" / "console"


def linked_files(html: str) -> list[str]:
    """The files index.html loads (relative to /console, so a path prefix is kept)."""
    return re.findall(r'(?:href|src)="(console/[^"]+)"', html)


async def test_the_page_and_every_file_it_links_are_served_with_a_strict_policy(
    make_client: ClientFactory,
) -> None:
    async with make_client() as client:
        page = await client.get("/console")
        files = {path: await client.get(f"/{path}") for path in linked_files(page.text)}
        modules = [await client.get(f"/console/{name}") for name in load_assets()]

    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert sorted(files) == ["console/app.js", "console/console.css"]
    assert all(response.status_code == 200 for response in files.values())
    assert files["console/app.js"].headers["content-type"].startswith("text/javascript")
    assert files["console/console.css"].headers["content-type"].startswith("text/css")
    assert all(response.status_code == 200 for response in modules)
    assert all("content-security-policy" in response.headers for response in modules)


def test_every_module_the_scripts_import_is_served() -> None:
    served = set(load_assets())
    imported = {
        name
        for path in CONSOLE_DIR.glob("*.js")
        for name in re.findall(r'from "\./([^"]+)"', path.read_text())
    }
    assert imported
    assert imported <= served


async def test_the_files_need_no_key_when_the_api_does(make_client: ClientFactory) -> None:
    async with make_client(api_keys=SecretStr("ui:secret")) as client:
        page = await client.get("/console")
        script = await client.get("/console/app.js")
        api = await client.get("/approvals")

    assert page.status_code == 200
    assert script.status_code == 200
    assert api.status_code == 401


async def test_unknown_files_are_problems(make_client: ClientFactory) -> None:
    async with make_client() as client:
        missing = await client.get("/console/nothing.js")
        outside = await client.get("/console/..%2Fapp.py")

    for response in (missing, outside):
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "/problems/not-found"


async def test_an_unchanged_file_is_not_sent_again(make_client: ClientFactory) -> None:
    async with make_client() as client:
        first = await client.get("/console/app.js")
        again = await client.get(
            "/console/app.js", headers={"If-None-Match": first.headers["etag"]}
        )

    assert first.headers["cache-control"] == "no-cache"
    assert again.status_code == 304
    assert again.content == b""


async def test_the_console_can_be_turned_off(make_client: ClientFactory) -> None:
    async with make_client(console=False) as client:
        page = await client.get("/console")
        script = await client.get("/console/app.js")

    for response in (page, script):
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"


async def test_the_console_is_not_an_operation_of_the_api(make_client: ClientFactory) -> None:
    async with make_client() as client:
        document = (await client.get("/openapi.json")).json()

    assert not [path for path in document["paths"] if path.startswith("/console")]


def test_the_wheel_ships_the_console(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    if uv is None:
        if in_ci():
            pytest.fail("uv is missing; CI must build the wheel (.ci/run installs uv)")
        pytest.skip("uv is not installed")
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(tmp_path), "--quiet"],
        cwd=ROOT,
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"app/api/console/{path.name}" for path in CONSOLE_DIR.iterdir()}
    assert expected <= shipped
    assert set(load_assets()) == {path.name for path in CONSOLE_DIR.iterdir()}
