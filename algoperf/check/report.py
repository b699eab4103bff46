"""Check results: one row per check with pass / warn / fail / skip, its reason and its findings.

A finding points at a file and line; a check fails when any of its findings is a failure, warns
when any is a warning. The table is for people, `--json` for machines; the exit code is 1 when
any check fails.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from algoperf.check.source import Location

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
_ORDER = {PASS: 0, SKIP: 0, WARN: 1, FAIL: 2}


@dataclass
class Finding:
    severity: str  # WARN or FAIL (a PASS finding is a note)
    message: str
    where: Location | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"severity": self.severity, "message": self.message}
        if self.where is not None:
            out["file"] = str(self.where.path)
            out["line"] = self.where.line
        return out

    def text(self) -> str:
        return f"{self.where.display()}: {self.message}" if self.where else self.message


@dataclass
class CheckResult:
    """One row of the report: `kind` is static (source only), import, or dynamic (runs code)."""

    name: str
    kind: str
    summary: str  # what the check verifies, one line
    findings: list[Finding] = field(default_factory=list)
    note: str = ""  # the reason shown when there is no finding, or extra context
    skipped: str | None = None  # why the check did not run

    @property
    def status(self) -> str:
        if self.skipped is not None:
            return SKIP
        worst = max((_ORDER[f.severity] for f in self.findings), default=0)
        return {0: PASS, 1: WARN, 2: FAIL}[worst]

    @property
    def reason(self) -> str:
        if self.skipped is not None:
            return self.skipped
        problems = [f for f in self.findings if f.severity in (WARN, FAIL)]
        if not problems:
            return self.note or self.summary
        head = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}" + (f"; {self.note}" if self.note else "")
        return head

    def fail(self, message: str, where: Location | None = None) -> None:
        self.findings.append(Finding(FAIL, message, where))

    def warn(self, message: str, where: Location | None = None) -> None:
        self.findings.append(Finding(WARN, message, where))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "status": self.status, "reason": self.reason,
            "summary": self.summary, "findings": [f.to_json() for f in self.findings],
        }


def exit_code(results: list[CheckResult]) -> int:
    return 1 if any(r.status == FAIL for r in results) else 0


def to_json(results: list[CheckResult], header: dict[str, Any]) -> str:
    return json.dumps({
        **header,
        "ok": exit_code(results) == 0,
        "counts": {s: sum(r.status == s for r in results) for s in (PASS, WARN, FAIL, SKIP)},
        "checks": [r.to_json() for r in results],
    }, indent=2)


_STYLE = {PASS: "green", WARN: "yellow", FAIL: "bold red", SKIP: "dim"}


def print_table(results: list[CheckResult], title: str, width: int | None = None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, show_lines=False, title_justify="left")
    table.add_column("check", no_wrap=True)
    table.add_column("kind", style="dim")
    table.add_column("status", no_wrap=True)
    table.add_column("reason", overflow="fold")  # fold, never cut, a file:line
    for r in results:
        reason = Text(r.reason)
        for f in r.findings:
            if f.severity in (WARN, FAIL):
                reason.append("\n" + f.text(), style=_STYLE[f.severity])
        table.add_row(r.name, r.kind, Text(r.status.upper(), style=_STYLE[r.status]), reason)
    # A pipe gets 140 columns (rich's 80 would wrap every reason) unless COLUMNS says otherwise.
    console = Console(width=width or (None if sys.stdout.isatty() or "COLUMNS" in os.environ else 140))
    console.print(table)
    counts = {s: sum(r.status == s for r in results) for s in (PASS, WARN, FAIL, SKIP)}
    verdict = "FAIL" if counts[FAIL] else "OK"
    console.print(f"{verdict}: {counts[PASS]} passed, {counts[WARN]} warnings, {counts[FAIL]} failed, "
                  f"{counts[SKIP]} skipped")
