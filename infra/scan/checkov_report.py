"""`make checkov`'s report: per framework, what was scanned, passed, failed and skipped (with
the reason given where the suppression is made), each failure in full; and a failure when
checkov scanned less than it was given.

checkov skips without a word a file it cannot parse, e.g. a GitHub Actions workflow that its
bundled (older) schema rejects for a permission it does not know (`attestations`); zero failed
checks then means nothing. Usage: checkov_report.py RESULTS.json SCAN_ROOT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

FRAMEWORKS = {  # what the Makefile puts under SCAN_ROOT for each framework
    "kubernetes": "rendered/*.yaml",
    "dockerfile": "infra/image/Dockerfile",
    "github_actions": ".github/workflows/*.y*ml",
}


def main(results_path: str, root: str) -> int:
    loaded = json.loads(Path(results_path).read_text())
    reports: list[dict[str, Any]] = loaded if isinstance(loaded, list) else [loaded]
    base = Path(root)
    problems = []
    for framework, pattern in FRAMEWORKS.items():
        given = {str(p.relative_to(base)) for p in base.glob(pattern)}
        results: dict[str, list[dict[str, Any]]] = {}
        for report in reports:
            if report.get("check_type") == framework:
                results = report.get("results", {})
        checks = {key: results.get(key, []) for key in
                  ("passed_checks", "failed_checks", "skipped_checks")}
        scanned = {c["file_path"].lstrip("/") for found in checks.values() for c in found}
        print(f"checkov {framework}: {len(checks['passed_checks'])} passed, "
              f"{len(checks['failed_checks'])} failed, {len(checks['skipped_checks'])} skipped "
              f"({', '.join(sorted(scanned)) or 'no file'})")
        for check in checks["skipped_checks"]:
            reason = (check.get("check_result") or {}).get("suppress_comment", "")
            print(f"  skipped {check['check_id']} {check['resource']}: {reason}")
        for check in checks["failed_checks"]:
            lines = "-".join(str(n) for n in check.get("file_line_range", []))
            print(f"  FAILED {check['check_id']} {check['check_name']}\n"
                  f"    {check['resource']} ({check['file_path'].lstrip('/')}:{lines})"
                  f"{'  ' + check['guideline'] if check.get('guideline') else ''}")
        problems += [f"{framework}: {path}" for path in sorted(given - scanned)]
        if not given:
            problems.append(f"{framework}: nothing given to scan")
    if problems:
        print("checkov scanned no check in: " + "; ".join(problems) + " (a file checkov cannot "
              "parse, e.g. a workflow its bundled schema rejects, is skipped silently)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
