"""The Prefect UI as people use it, in a real headless browser (Debian's chromium, driven by selenium): every
deployment of prefect.yaml on the deployments page; a finished rollout's Artifacts tab with its report (the
chart rendered as an image), SLO verdict table and progress; a rollout started from the deployment's own Run
form with a changed parameter, seen to complete. Screenshots go to the reports folder's ui/ and to
<repo>/reports/ui/ (one of them is docs/img/rollout-run.png in the README)."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.prefect_server_support import PrefectServer, deployed_project, deployment_names
from tests.rollout_support import REPO_ROOT, fast_env

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
WAIT_S = 120  # a cold SPA on a busy 2-CPU machine
CHART_RENDERED = ("return [...document.images].some(i => i.src.startsWith('data:image/png;base64,')"
                  " && i.complete && i.naturalWidth > 0)")


class Ui:
    """The browser on one Prefect server: open a page, wait for what a person would look for, keep screenshots."""

    def __init__(self, driver, base: str, folders: list[Path]):
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver, self.base, self.folders = driver, base, folders
        # the SPA re-renders while data arrives: an element found a moment ago may be gone; look again
        self.wait = WebDriverWait(driver, WAIT_S, ignored_exceptions=(StaleElementReferenceException,))

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def see(self, text: str) -> None:
        """Wait until ``text`` is visible somewhere on the page (the first element holding it may be hidden)."""
        from selenium.webdriver.common.by import By

        xpath = f"//*[text()[contains(., {_xpath_str(text)})]]"
        self.wait.until(lambda d: any(e.is_displayed() for e in d.find_elements(By.XPATH, xpath)),
                        f"{text!r} not visible on {self.driver.current_url}")

    def click(self, xpath: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as EC

        self.wait.until(EC.element_to_be_clickable((By.XPATH, xpath)), f"{xpath} not clickable").click()

    def submit_run_form(self, attempts: int = 3) -> None:
        """Submit, and submit again after the UI's "Something went wrong" toast, as a person would: the local
        server answers a write that meets SQLite contention with a 503 (retryable; Prefect's Python client
        retries it, the UI does not). The failed attempt created no run."""
        from selenium.webdriver.common.by import By

        toast = "//*[contains(normalize-space(.), 'Something went wrong')]"
        for attempt in range(1, attempts + 1):
            self.close_toasts()  # an earlier toast must not read as this attempt's answer
            self.click("//button[normalize-space(.)='Submit']")
            self.wait.until(lambda d: not d.current_url.endswith("/run") or any(
                e.is_displayed() for e in d.find_elements(By.XPATH, toast)), "the Run form did not answer")
            if not self.driver.current_url.endswith("/run"):
                return
            self.shot(f"rollout-run-form-retry-{attempt}")
            time.sleep(2)
        raise AssertionError(f"the Run form did not submit in {attempts} attempts (503 each time)")

    def close_toasts(self) -> None:
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.common.by import By

        for close in self.driver.find_elements(By.CSS_SELECTOR, "button.p-toast__close-btn"):
            with contextlib.suppress(WebDriverException):  # it may fade out between finding and clicking
                close.click()

    def see_chart(self) -> None:
        """The report's inlined PNG is decoded and shown (not stripped by the UI's markdown sanitizer)."""
        self.wait.until(lambda d: d.execute_script(CHART_RENDERED), f"no rendered chart on {self.driver.current_url}")

    def shot(self, name: str) -> None:
        self.folders[0].mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(self.folders[0] / f"{name}.png"))
        for folder in self.folders[1:]:
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.folders[0] / f"{name}.png", folder)

    @contextlib.contextmanager
    def evidence(self) -> Iterator[None]:
        """On failure: a screenshot and the page source of where the browser was."""
        try:
            yield
        except BaseException:
            self.shot("failure")
            (self.folders[0] / "failure.html").write_text(self.driver.page_source)
            (self.folders[0] / "failure-console.log").write_text(
                "\n".join(str(entry) for entry in self.driver.get_log("browser")))
            raise


def _xpath_str(text: str) -> str:
    return f"'{text}'" if "'" not in text else f'"{text}"'


@pytest.fixture
def browser():
    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), \
        "the UI test needs Debian's chromium: apt-get install chromium chromium-driver (./r1 test does)"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,1400"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    yield driver
    driver.quit()


def artifact_ids(server: PrefectServer, flow_run_id: str) -> dict[str, str]:
    return {a["key"]: a["id"] for a in server.artifacts(flow_run_id)}


def run_named(server: PrefectServer, deployment_id: str, name: str, timeout_s: float = 60) -> dict:
    """The flow run the UI's form created (by its run name)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := [r for r in server.flow_runs(deployment_id) if r["name"] == name]:
            return found[0]
        time.sleep(1)
    raise AssertionError(f"no flow run {name!r} of the deployment after {timeout_s:.0f} s")


@pytest.mark.slow
def test_the_ui_shows_deployments_a_rollouts_artifacts_and_runs_one_from_its_form(emulator, tmp_path, unique_name,
                                                                                 browser):
    reports = tmp_path / "reports"
    with deployed_project(tmp_path, fast_env(emulator.state_dir, reports, unique_name("ui"))) as server:
        ui = Ui(browser, server.ui, [reports / "ui", REPO_ROOT / "reports" / "ui"])
        with ui.evidence():
            ui.open("/deployments")
            for name in deployment_names():
                ui.see(name)
            ui.shot("deployments")

            # a finished rollout: its Artifacts tab, the report with the chart, the SLO table
            run = server.cli("deployment", "run", "rollout/rollout", "--param", "bake_seconds=3", "--watch",
                             "--watch-interval", "1", timeout=600)
            assert run.returncode == 0 and "Completed" in run.stdout, run.stdout + run.stderr
            deployment = server.deployment("rollout/rollout")
            flow_run_id = server.flow_runs(deployment["id"])[0]["id"]
            run_id = flow_run_id[:8]
            ui.open(f"/runs/flow-run/{flow_run_id}")
            ui.see("Completed")
            ui.shot("rollout-run-page")
            ui.click("//*[@role='tablist']/*[normalize-space(.)='Artifacts']")
            for key in (f"rollout-{run_id}", f"rollout-{run_id}-timeline", f"rollout-{run_id}-slo",
                        f"rollout-{run_id}-progress"):
                ui.see(key)
            ui.shot("rollout-artifacts")
            ui.click(f"//*[normalize-space(text())='rollout-{run_id}']")  # the report's card
            ui.see(f"Rollout {run_id}: promoted")
            ui.see_chart()
            ui.see("SLO verdicts")
            ui.shot("rollout-report")
            ids = artifact_ids(server, flow_run_id)
            ui.open(f"/artifacts/artifact/{ids[f'rollout-{run_id}-slo']}")
            for text in ("TTFT p95", "goodput", "shift 100 %"):
                ui.see(text)
            ui.shot("rollout-slo-table")
            ui.open(f"/v2/artifacts/artifact/{ids[f'rollout-{run_id}']}")  # the newer UI renders it too
            ui.see(f"Rollout {run_id}: promoted")
            ui.see_chart()
            ui.shot("rollout-report-v2")

            # a rollout from the deployment's Run form, with a changed bake
            ui.open(f"/deployments/deployment/{deployment['id']}/run")
            bake = ("//span[normalize-space(text())='bake_seconds (Optional)']"
                    "/ancestor::div[contains(@class, 'schema-form-property ')][1]")
            ui.click(bake + "//button[normalize-space(.)='float']")
            ui.click(bake + "//input")
            browser.switch_to.active_element.send_keys("2.5")
            run_name = browser.find_element("xpath", "//label[normalize-space(.)='Run Name']/following::input[1]"
                                            ).get_attribute("value")
            ui.shot("rollout-run-form")
            ui.submit_run_form()
            started = run_named(server, deployment["id"], run_name)
            finished = server.wait_finished(started["id"])
            assert finished["state"]["type"] == "COMPLETED", finished["state"]
            assert finished["parameters"]["bake_seconds"] == 2.5
            ui.open(f"/runs/flow-run/{started['id']}")
            ui.see(run_name)
            ui.see("Completed")
            ui.shot("rollout-run-from-form")
