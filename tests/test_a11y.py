"""Accessibility: axe-core (node_modules/axe-core, pinned by package-lock.json) run in real Chromium on every page.

Each page must have zero violations of every axe rule (WCAG 2.x A/AA plus best practices), in the
light and the dark colour scheme, and in the states a keyboard user meets: suggestions open,
a filtered page 2. Failures print rule, impact, fix and the offending elements.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser import REPO, format_violations, reset_viewport, run_axe, set_color_scheme, set_viewport, wait_for

pytestmark = pytest.mark.browser

TEMPLATES = REPO / "templates"


def _optional_pages(world: Any) -> dict[str, str]:
    """Pages that exist once other features land (login, FAQ): checked whenever their template is there."""
    pages = {}
    rules = {rule.endpoint: rule.rule for rule in world.live.app.url_map.iter_rules()
             if "GET" in (rule.methods or ()) and not rule.arguments}
    for template, words in (("login.html", ("login", "sign_in", "signin")), ("faq.html", ("faq",))):
        if not (TEMPLATES / template).is_file():
            continue
        found = [path for endpoint, path in rules.items() if any(w in endpoint.lower() for w in words)]
        assert found, f"templates/{template} exists but no GET route serves it (endpoints: {sorted(rules)})"
        pages[template.removesuffix(".html")] = sorted(found, key=len)[0]
    return pages


def _pages(world: Any) -> dict[str, str]:
    article = world.article("Isotretinoin for severe acne")
    return {
        "home": "/",
        "results": "/search?q=skin",
        "results-filtered-page-2": "/search?q=skin&category=Acne&sort=date&page=2",
        "no-results": "/search?q=zzqxvbnm",
        "article": f"/article/{article.id}",
        "error-404": "/no/such/page",
        "error-400": "/search?q=acne&page=zero",
        **_optional_pages(world),
    }


def _check(browser: Any, axe_js: str, url: str, label: str) -> list[dict[str, Any]]:
    browser.get(url)
    wait_for(browser, lambda d: d.execute_script("return document.readyState") == "complete", f"{label} to load")
    return run_axe(browser, axe_js)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_has_no_axe_violations(browser, kb_world, axe_js, scheme, record_property):
    """One test per colour scheme so a failure lists every page's violations at once."""
    set_color_scheme(browser, scheme)
    try:
        report: dict[str, list[dict[str, Any]]] = {}
        for label, path in _pages(kb_world).items():
            report[label] = _check(browser, axe_js, kb_world.url + path, f"{label} ({scheme})")
            background = browser.execute_script(
                "var c = getComputedStyle(document.body).backgroundColor.match(/\\d+/g).map(Number);"
                "return (c[0] * 299 + c[1] * 587 + c[2] * 114) / 1000;")
            assert (background < 100) == (scheme == "dark"), f"{label} is not in the {scheme} scheme"
            status = browser.execute_script("return performance.getEntriesByType('navigation')[0].responseStatus")
            if label.startswith("error-"):
                assert status == int(label[-3:]), f"{path} should answer {label[-3:]}, got {status}"
            else:
                assert status == 200, f"{path} answered {status}"
        record_property(f"axe_{scheme}", {k: len(v) for k, v in report.items()})
        print(f"axe violations ({scheme}): " + ", ".join(f"{k}={len(v)}" for k, v in report.items()))
        failures = {k: v for k, v in report.items() if v}
        assert not failures, "axe-core found accessibility violations:\n" + "\n".join(
            f"[{label}, {scheme}]\n{format_violations(v)}" for label, v in failures.items())
    finally:
        set_color_scheme(browser, None)


def test_open_suggestion_list_has_no_axe_violations(browser, kb_world, axe_js):
    """The combobox with its listbox open and an option active is the most ARIA-heavy state."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(kb_world.url + "/")
    box = browser.find_element(By.ID, "q")
    box.send_keys("ecz")
    wait_for(browser, lambda d: box.get_dom_attribute("aria-expanded") == "true", "suggestions to open")
    box.send_keys(Keys.ARROW_DOWN)
    assert box.get_dom_attribute("aria-activedescendant") == "q-suggestions-option-0"
    violations = run_axe(browser, axe_js)
    assert not violations, "axe-core violations with suggestions open:\n" + format_violations(violations)


STAFF_NAME, STAFF_PASSWORD = "a11y-staff", "a11y staff password"


def _sign_in_as_staff(browser: Any, world: Any) -> None:
    """A real staff user in the world's store, signed in through the login form."""
    from selenium.webdriver.common.by import By

    from kb import users
    from kb.config import data_paths
    from kb.store import open_store

    with open_store(data_paths(world.data_dir)["store"]) as store:
        if users.get_user(store, STAFF_NAME) is None:
            users.add_user(store, STAFF_NAME, STAFF_PASSWORD)
    browser.get(world.url + "/login")
    browser.find_element(By.ID, "username").send_keys(STAFF_NAME)
    browser.find_element(By.ID, "password").send_keys(STAFF_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "form.login-form button[type=submit]").click()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "form.logout-form"), "the signed-in staff view")


def _sign_out(browser: Any, world: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(world.url + "/")
    buttons = browser.find_elements(By.CSS_SELECTOR, "form.logout-form button[type=submit]")
    if buttons:
        buttons[0].click()
        wait_for(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, "form.logout-form"), "signing out")


def test_staff_view_and_the_phone_filter_have_no_axe_violations(browser, kb_world, axe_js):
    """States only some readers meet: the staff bar with its sign-out button and the audience filter, and the
    Filter control opened on a phone; in both colour schemes."""
    from selenium.webdriver.common.by import By

    report: dict[str, list[dict[str, Any]]] = {}
    _sign_in_as_staff(browser, kb_world)
    try:
        for scheme in ("light", "dark"):
            set_color_scheme(browser, scheme)
            for label, path in (("staff-home", "/"), ("staff-results", "/search?q=skin&audience=public"),
                                ("staff-login", "/login"), ("staff-faq", "/faq")):
                report[f"{label}, {scheme}"] = _check(browser, axe_js, kb_world.url + path, label)
            assert browser.find_elements(By.CSS_SELECTOR, "form.logout-form button.button")
            set_viewport(browser, 375, 740)
            try:
                browser.get(kb_world.url + "/search?q=skin&audience=public")
                wait_for(browser, lambda d: d.execute_script("return document.readyState") == "complete", "results")
                browser.find_element(By.CSS_SELECTOR, "#filters > summary").click()
                assert browser.find_element(By.CSS_SELECTOR, ".facet-audience a.facet-link").is_displayed()
                report[f"phone-filter-open, {scheme}"] = run_axe(browser, axe_js)
            finally:
                reset_viewport(browser)
    finally:
        set_color_scheme(browser, None)
        _sign_out(browser, kb_world)
    print("axe violations (staff, phone): " + ", ".join(f"{k}={len(v)}" for k, v in report.items()))
    failures = {k: v for k, v in report.items() if v}
    assert not failures, "axe-core found accessibility violations:\n" + "\n".join(
        f"[{label}]\n{format_violations(v)}" for label, v in failures.items())


def test_axe_really_runs_and_reports(browser, kb_world, axe_js):
    """Guard against a vacuous pass: the same runner reports a violation on a deliberately broken page."""
    browser.get(kb_world.url + "/")
    browser.execute_script("var i = document.getElementById('q'); i.removeAttribute('id');"
                           "document.documentElement.removeAttribute('lang');")
    ids = {v["id"] for v in run_axe(browser, axe_js)}
    assert {"label", "html-has-lang"} <= ids, ids


def test_axe_is_the_pinned_package():
    import json

    lock = json.loads((REPO / "package-lock.json").read_text("utf-8"))
    pinned = lock["packages"]["node_modules/axe-core"]["version"]
    installed = json.loads((REPO / "node_modules/axe-core/package.json").read_text("utf-8"))["version"] \
        if (REPO / "node_modules/axe-core/package.json").is_file() else None
    assert installed == pinned, (f"node_modules has axe-core {installed}, package-lock.json pins {pinned}: "
                                 "run `npm ci`")
    assert Path(REPO / ".gitignore").read_text("utf-8").count("/node_modules/") == 1
