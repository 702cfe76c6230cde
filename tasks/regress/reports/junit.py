"""JUnit XML: one <testsuite> per target, one <testcase> per conversation."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any


def to_junit(report: dict[str, Any]) -> str:
    root = ET.Element("testsuites", name="labmate-regress")
    for role, uri in report["targets"].items():
        summary = report["summary"][role]
        suite = ET.SubElement(
            root,
            "testsuite",
            name=f"regress.{role}",
            tests=str(summary["total"]),
            failures=str(summary["failed"]),
            errors=str(summary["errors"]),
            skipped="0",
        )
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="target", value=uri)
        ET.SubElement(props, "property", name="verdict", value="pass" if report["verdict"]["passed"] else "fail")
        for entry in report["conversations"]:
            result = entry["results"][role]
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"regress.{role}.{entry['suite'] or 'suite'}",
                name=entry["key"],
                time=f"{result['duration_ms'] / 1000:.3f}",
            )
            if result["status"] == "pass":
                continue
            text = _failure_text(result)
            if result["status"] == "error":
                ET.SubElement(case, "error", message=result["error"] or "error").text = text
            else:
                first = _first_failed(result)
                ET.SubElement(case, "failure", message=first or "failed").text = text
            if entry["change"] == "new_failure" and role == "candidate":
                ET.SubElement(case, "system-out").text = "NEW FAILURE (passes on baseline)"
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def _first_failed(result: dict[str, Any]) -> str | None:
    for turn in result["turns"]:
        for exp in turn["expectations"]:
            if not exp["passed"] and not exp["optional"]:
                return f"turn {turn['index']}: expected {exp['description']}"
    return None


def _failure_text(result: dict[str, Any]) -> str:
    lines = []
    for turn in result["turns"]:
        lines.append(f"turn {turn['index']} user: {turn['user']}")
        lines.append(f"  reply: {turn['reply']!r}")
        if turn["error"]:
            lines.append(f"  error: {turn['error']}")
        for exp in turn["expectations"]:
            mark = "ok  " if exp["passed"] else "FAIL"
            detail = f" ({exp['detail']})" if exp["detail"] else ""
            lines.append(f"  {mark} {exp['description']}{detail}")
    return "\n".join(lines)


def write_junit(report: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(to_junit(report), encoding="utf-8")
