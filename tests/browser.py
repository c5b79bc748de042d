"""Drive the real MLflow UI (`twinflow ui`) in headless Debian Chromium via Selenium."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from components.net import free_port
from tests.conftest import cli_env

# Chromium in a sandbox without network: no background fetches, no first-run UI.
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1500,1100"]


class UiServer:
    """`twinflow ui` on a free loopback port, started and stopped as a process group."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> UiServer:
        self.server = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "ui", "--port", str(self.port)],
            cwd=self.work, env=cli_env(self.work), start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        os.killpg(self.server.pid, signal.SIGTERM)
        self.server.wait(timeout=30)

    def _wait_ready(self, seconds: float = 90) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.base}/health", timeout=2).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.5)
        raise AssertionError(f"mlflow server on {self.base} not ready in {seconds} s")


class MlflowUi(UiServer):
    """The UI server plus a headless Chromium session looking at it."""

    def __init__(self, work: Path, chromedriver: str) -> None:
        super().__init__(work)
        self.chromedriver = chromedriver

    def __enter__(self) -> MlflowUi:
        super().__enter__()
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.work / 'chromium-profile'}")
        self.driver = webdriver.Chrome(service=Service(self.chromedriver), options=options)
        return self

    def __exit__(self, *exc: object) -> None:
        self.driver.quit()
        super().__exit__(*exc)

    def _experiment(self, run_id: str) -> str:
        info = requests.get(f"{self.base}/api/2.0/mlflow/runs/get", params={"run_id": run_id},
                            timeout=10).json()
        return str(info["run"]["info"]["experiment_id"])

    def _text_when(self, url: str, expected: list[str], seconds: float = 60,
                   frame: bool = False) -> str:
        """Load ``url`` and wait until all ``expected`` strings show (the UI renders late)."""
        self.driver.get(url)
        deadline, text = time.monotonic() + seconds, ""
        while time.monotonic() < deadline:
            self.driver.switch_to.default_content()
            if frame:
                frames = self.driver.find_elements(By.TAG_NAME, "iframe")
                if frames:
                    self.driver.switch_to.frame(frames[0])
            text = self.driver.find_element(By.TAG_NAME, "body").text
            if all(e in text for e in expected):
                break
            time.sleep(0.5)
        self.driver.switch_to.default_content()
        return text

    def open_run(self, run_id: str) -> str:
        """The run page; returns its visible text once the metrics are rendered."""
        url = f"{self.base}/#/experiments/{self._experiment(run_id)}/runs/{run_id}"
        return self._text_when(url, ["test_accuracy"])

    def open_experiment_with_children(self, run_id: str) -> str:
        """The experiment's training runs with nested step runs expanded (the tree)."""
        url = f"{self.base}/#/experiments/{self._experiment(run_id)}/runs"
        self._text_when(url, ["matching runs"])
        expander = (f"//a[contains(@href, '{run_id}')]/ancestor::*[@role='gridcell'][1]"
                    "//button[contains(@data-component-id, 'runnamecellrenderer')]")
        self.driver.find_element(By.XPATH, expander).click()
        return self._wait_text(["compare", "ingest"])

    def _wait_text(self, expected: list[str], seconds: float = 60) -> str:
        deadline, text = time.monotonic() + seconds, ""
        while time.monotonic() < deadline:
            text = self.driver.find_element(By.TAG_NAME, "body").text
            if all(e in text for e in expected):
                break
            time.sleep(0.5)
        return text

    def open_artifact(self, run_id: str, path: str) -> str:
        """An artifact's preview (HTML artifacts render in an iframe)."""
        url = (f"{self.base}/#/experiments/{self._experiment(run_id)}/runs/{run_id}"
               f"/artifacts/{path}")
        return self._text_when(url, ["twinflow framework comparison"], frame=True)

    def screenshot(self, path: Path) -> None:
        """Save what the browser shows (kept as a test artifact)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
