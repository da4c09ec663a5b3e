"""`/docs` and `/redoc` work offline: every file their pages load is served by the service."""

from __future__ import annotations

import re

import pytest

from tests.api.conftest import Client

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_pages_load_nothing_from_elsewhere(client: Client, page: str) -> None:
    html = (await client.get(page)).text

    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?['"]([^'"]+)['"]""", html)
    loaded = [u for pair in urls for u in pair if u]
    assert loaded
    assert all(u.startswith("/") for u in loaded), loaded  # none from a CDN
    for url in loaded:
        response = await client.get(url)
        assert response.status_code == 200, url
        assert response.content


async def test_an_unknown_docs_asset_is_a_404_problem(client: Client) -> None:
    response = await client.get("/docs/assets/..%2Fcore.py")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
