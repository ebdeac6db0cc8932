"""The pytest plugin: ``datafast_fake`` serves sync tests and async ones under any plugin."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = """
import asyncio
import json

import aiohttp
import pytest

BODY = {"datafast_visitor_id": "visitor-1", "name": "Sign Up"}


async def post(fake, body=BODY):
    headers = {"Authorization": f"Bearer {fake.api_key}"}
    async with aiohttp.ClientSession() as session:
        async with session.post(fake.base_url + "/api/v1/goals", json=body, headers=headers) as r:
            return r.status, await r.json(content_type=None)


def test_sync(datafast_fake):
    datafast_fake.fail_next(429)
    assert asyncio.run(post(datafast_fake))[0] == 429
    status, body = asyncio.run(post(datafast_fake))
    assert status == 200
    assert len(body["data"][0]["eventId"]) == 24
    assert [goal.name for goal in datafast_fake.goals] == ["sign_up"]
    assert [r.status for r in datafast_fake.requests] == [429, 200]


@pytest.mark.asyncio
async def test_under_pytest_asyncio(datafast_fake):
    assert (await post(datafast_fake))[0] == 200
    assert len(datafast_fake.goals) == 1


@pytest.mark.anyio
async def test_under_anyio(datafast_fake):
    datafast_fake.known_visitors = {"someone-else"}
    assert (await post(datafast_fake))[0] == 404
    datafast_fake.reset()
    assert datafast_fake.requests == []


@pytest.fixture
def anyio_backend():
    return "asyncio"


def test_each_test_gets_a_fresh_server(datafast_fake):
    assert datafast_fake.goals == []
    assert datafast_fake.requests == []
"""

INI = """
[pytest]
filterwarnings = error
asyncio_default_fixture_loop_scope = function
"""


def test_the_fixture_serves_sync_and_async_tests(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_user=USER_TESTS)

    result = pytester.runpytest("-p", "no:cacheprovider")

    result.assert_outcomes(passed=4)


def test_a_failing_user_assertion_still_fails(pytester: pytest.Pytester) -> None:
    """The fixture does not swallow failures, and its server stops after a failed test."""
    pytester.makeini(INI)
    pytester.makepyfile(
        test_user="""
        def test_no_goal(datafast_fake):
            assert datafast_fake.goals == ["something"]
        """
    )

    result = pytester.runpytest("-p", "no:cacheprovider")

    result.assert_outcomes(failed=1)


def test_the_plugin_is_registered_by_the_entry_point(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")

    result.stdout.fnmatch_lines(["*datafast_fake*", "*fake DataFast server*"])


def test_the_plugin_imports_no_async_test_plugin() -> None:
    code = (
        "import sys, datafast_async.testing.pytest_plugin\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'pytest_asyncio', 'aioresponses', 'hypothesis', 'uvloop'})\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
