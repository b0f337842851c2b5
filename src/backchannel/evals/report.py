"""An eval's results: a report to read, and JUnit XML for CI."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from .runner import Outcome


def text_report(name: str, outcomes: Sequence[Outcome]) -> list[str]:
    """Each conversation, passed or failed, with every expectation's verdict; a failed
    one with its timeline."""
    passed = sum(o.passed for o in outcomes)
    out = [f"{name}: {passed}/{len(outcomes)} conversations passed"]
    for o in outcomes:
        mark = "PASS" if o.passed else "FAIL"
        out.append(f"  {mark} {o.conversation.name} ({o.mode}, {o.seconds:.1f} s)")
        if o.error:
            out.append(f"       could not finish: {o.error}")
        for v in o.verdicts:
            out.append(
                f"       {'ok ' if v.passed else 'NO '} {v.expectation.describe()}: {v.detail}"
            )
        if not o.passed:
            out.append("       timeline:")
            out += [f"         {line}" for line in o.timeline]
    return out


def junit(suites: Sequence[tuple[str, Sequence[Outcome]]], path: Path) -> None:
    """One ``testsuite`` per eval file, one ``testcase`` per conversation."""
    root = ET.Element("testsuites")
    for name, outcomes in suites:
        suite = ET.SubElement(
            root,
            "testsuite",
            name=name,
            tests=str(len(outcomes)),
            failures=str(sum(not o.passed for o in outcomes)),
            time=f"{sum(o.seconds for o in outcomes):.3f}",
        )
        for o in outcomes:
            case = ET.SubElement(
                suite, "testcase", classname=name, name=o.conversation.name, time=f"{o.seconds:.3f}"
            )
            if not o.passed:
                failed = [v for v in o.verdicts if not v.passed]
                message = o.error or "; ".join(
                    f"{v.expectation.describe()}: {v.detail}" for v in failed
                )
                failure = ET.SubElement(case, "failure", message=message)
                failure.text = "\n".join(text_report(name, [o]))
            ET.SubElement(case, "system-out").text = "\n".join(o.timeline)
    ET.indent(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
