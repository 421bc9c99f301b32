"""The one place that talks to `flytekit.current_context()`.

Stage code never imports this; the thin `@task` bodies do. Everything here degrades to a
sensible local value outside a Flyte execution, so stage functions stay testable alone.
"""

from __future__ import annotations

import html as html_lib
import logging
import re
from pathlib import Path

import flytekit

from common.settings import load_settings

logger = logging.getLogger(__name__)


def execution_id() -> str:
    """`project:domain:name` of the running Flyte execution (``local`` values when local)."""
    try:
        ex = flytekit.current_context().execution_id
    except Exception:  # no Flyte context at all (plain Python call)
        return "none:none:none"
    return f"{ex.project}:{ex.domain}:{ex.name}"


def is_remote_execution() -> bool:
    return not execution_id().startswith("local:")


def publish_report(stage: str, title: str, body_html: str) -> Path:
    """Show `body_html` as a Flyte Deck and also write it as a standalone HTML file.

    The file lets a user without a Flyte cluster open the same report the Flyte UI shows;
    its path is logged and returned.
    """
    flytekit.Deck(title, body_html)
    safe_ex = re.sub(r"[^A-Za-z0-9_.-]", "_", execution_id())
    path = load_settings().reports_dir / safe_ex / f"{stage}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html_lib.escape(title)}"
        f"</title></head><body><h1>{html_lib.escape(title)}</h1>{body_html}</body></html>"
    )
    tmp.replace(path)
    logger.warning("shipyard: %s report written to %s", stage, path)
    print(f"[shipyard] {stage} report: {path}", flush=True)
    return path


def error_html(error: BaseException) -> str:
    """A stage error as the body of its report, for stages with nothing richer to show."""
    return f"<pre>{html_lib.escape(str(error))}</pre>"
