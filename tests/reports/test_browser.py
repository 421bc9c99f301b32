"""Every report page and the run overview render in a real headless browser (Debian's
chromium) with the expected headings and no console errors. Skipped, with the reason, where
chromium is not installed (`make browser` installs it)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
requires_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed: run `make browser` (apt-get install "
    "chromium, as root) to render the reports in a headless browser")

# Page -> headings it must show once rendered.
EXPECTED_HEADINGS = {
    "index.html": ["Pipeline run local-", "Data validation", "Training", "Evaluation: PASS",
                   "Model registration", "Canary deployment"],
    "validate_data.html": ["Data validation", "PASSED", "Expectations"],
    "train.html": ["Training"],
    "evaluate.html": ["Evaluation: PASS", "Gate: PASS (absolute)", "Gate checks", "Plot"],
    "register.html": ["Model registration", "Failed"],
    "deploy_canary.html": ["Canary deployment", "shipyard-tiny: PASS (promoted)",
                           "canary 10%: PASS"],
}
# What chromium logs about the page itself (JavaScript console, page load); its complaints
# about the container (dbus, GPU) are not about our pages.
PAGE_ERROR = re.compile(r"CONSOLE[(:]\d+|Uncaught|ERR_FILE_NOT_FOUND|Failed to load resource",
                        re.IGNORECASE)


def render(page: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
         "--v=0", f"--user-data-dir={tmp_path / 'profile'}", *extra, page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)


@requires_chromium
def test_every_page_renders_with_its_headings_and_no_console_errors(
    sample_run: Path, tmp_path: Path,
) -> None:
    for name, headings in EXPECTED_HEADINGS.items():
        page = sample_run.parent / name
        result = render(page, tmp_path, "--dump-dom")
        assert result.returncode == 0, result.stderr[-2000:]
        dom = result.stdout
        assert "<body>" in dom and len(dom) > 500, f"{name}: empty DOM"
        rendered = " ".join(re.findall(r"<h[123][^>]*>(.*?)</h[123]>", dom, re.S))
        for heading in headings:
            assert heading in rendered, f"{name}: heading {heading!r} not in {rendered[:300]!r}"
        assert "<script" not in dom, f"{name}: pages carry no scripts"
        errors = [line for line in result.stderr.splitlines() if PAGE_ERROR.search(line)]
        assert not errors, f"{name}: {errors}"


@requires_chromium
def test_overview_screenshot_is_drawn(sample_run: Path, tmp_path: Path) -> None:
    shot = tmp_path / "overview.png"
    result = render(sample_run, tmp_path, "--hide-scrollbars", "--window-size=1200,1800",
                    f"--screenshot={shot}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
