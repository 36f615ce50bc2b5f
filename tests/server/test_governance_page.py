"""The governance page in Chromium and over plain HTTP: admins and auditors see the report's
sections and download it (the JSON verifies offline); a staff user gets 403, anonymous the login."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, expect

from sovra.governance.evidence import verify_bundle
from sovra.server.accounts import AccountStore
from sovra.workspace import Workspace
from tests.server.test_browser import browser, new_page  # noqa: F401 - the module's fixture
from tests.server.test_ui import app_client, sign_in  # noqa: F401 - the module's fixture
from tests.support.server import password

AUDITOR = "audrey"


@pytest.fixture(scope="module", autouse=True)
def auditor(workspace: Workspace) -> Iterator[str]:
    """A member of `auditors` only (not staff, not admins), removed afterwards."""
    workspace.directory.add_user(AUDITOR, ["auditors"], "Audrey Auditor")
    accounts = AccountStore.in_home(workspace.home)
    try:
        accounts.set_password(AUDITOR, password(AUDITOR))
    finally:
        accounts.close()
    yield AUDITOR
    workspace.directory.remove_user(AUDITOR)


def test_admin_and_auditor_see_the_page_staff_do_not(app_client: TestClient) -> None:  # noqa: F811
    assert app_client.get("/governance", follow_redirects=False).status_code in (302, 303, 307)
    sign_in(app_client, "carol")
    assert app_client.get("/governance").status_code == 403
    assert app_client.get("/governance/report.json").status_code == 403
    assert 'href="/governance"' not in app_client.get("/").text
    for user in ("root", AUDITOR):
        sign_in(app_client, user)
        home = app_client.get("/")
        assert 'href="/governance"' in home.text
        resp = app_client.get("/governance")
        assert resp.status_code == 200, resp.text[:500]
        assert "Audit log verified" in resp.text
        assert "Human oversight (AI Act Art. 14)" in resp.text
        assert "style-src 'self'" in resp.headers["content-security-policy"]
    # The auditor is no administrator: the other admin pages stay closed.
    assert app_client.get("/admin/users").status_code == 403


def test_downloads_and_the_json_verifies(app_client: TestClient, workspace: Workspace) -> None:  # noqa: F811
    sign_in(app_client, AUDITOR)
    resp = app_client.get("/governance/report.json")
    assert resp.status_code == 200
    assert "attachment" in resp.headers["content-disposition"]
    bundle = json.loads(resp.content)
    assert verify_bundle(bundle, workspace.audit.public_keys()).ok
    pdf = app_client.get("/governance/report.pdf?since=2020-01-01")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert app_client.get("/governance/report.exe").status_code == 404


def test_governance_page_in_chromium(browser: Browser, live_url: str) -> None:  # noqa: F811
    for user, allowed in (("root", True), (AUDITOR, True), ("carol", False)):
        page, problems = new_page(browser)
        page.goto(live_url + "/login?next=/governance")
        page.get_by_label("User name").fill(user)
        page.get_by_label("Password").fill(password(user))
        page.get_by_role("button", name="Sign in").click()
        if allowed:
            expect(page.get_by_role("heading", name="Governance", exact=True)).to_be_visible()
            expect(page.locator("#verification")).to_contain_text("Audit log verified")
            expect(page.get_by_role("heading", name=re.compile("Human oversight"))).to_be_visible()
            expect(page.get_by_role("link", name="PDF")).to_have_attribute(
                "href", "/governance/report.pdf"
            )
            # A figure's entry link leads to its row in the appendix.
            first = page.locator(".trace a").first
            target = first.get_attribute("href") or ""
            assert target.startswith("#leaf-")
            first.click()
            expect(page.locator(target)).to_be_visible()
        else:
            expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
            expect(page.get_by_role("link", name="Governance")).to_have_count(0)
            # The refusal page itself answers 403, which Chromium logs as a failed load.
            problems = [p for p in problems if "status of 403" not in p]
        assert not problems, problems
        page.context.close()


def test_monitor_alerts_show_as_a_banner(app_client: TestClient, workspace: Workspace) -> None:  # noqa: F811
    from datetime import UTC, datetime

    from sovra.governance.monitor import STATE_FILE, Alert, MonitorState, Window

    now = datetime.now(UTC)
    state = MonitorState(
        checked_at=now,
        reference=Window(now, now),
        current=Window(now, now),
        alerts=[Alert("drift.psi", 0.41, 0.25, "current", "query drift: PSI 0.41 > 0.25")],
    )
    path = workspace.home / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state.to_dict()), encoding="utf-8")
    try:
        sign_in(app_client, "root")
        page = app_client.get("/governance").text
    finally:
        path.unlink()
    banner = '<p class="alert" role="alert">Monitoring alert: query drift: PSI 0.41 &gt; 0.25</p>'
    assert banner in page
    assert "Monitoring alert" not in app_client.get("/governance").text
