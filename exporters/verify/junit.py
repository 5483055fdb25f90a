"""JUnit XML for ``xbuild verify --junit``: CI systems show each check as a test case.

One test case per integrity check (``integrity`` class) and per (artifact, backend, batch)
numeric comparison (``numeric.<backend>`` class). A comparison that could not run here is a
*skipped* case with the reason, and so are artifacts the options left out (``selection``) and
files the manifest does not list (``unlisted``): a report never looks greener than what ran. A
comparison that ran but was not judged (an int8 artifact on synthetic images) is a skipped case
whose message starts with "not judged", and so is the ``verdict`` case then (a failure for
"failed" and "not verified"); the suite's ``verdict`` property carries the word itself.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from exporters.verify.checks import VerificationResult
from xception_build.errors import UserError
from xception_build.files import atomic_write


def junit_xml(result: VerificationResult, name: str = "xbuild verify") -> bytes:
    """The result as a JUnit ``<testsuite>`` document."""
    suite = ET.Element("testsuite", name=name)
    ET.SubElement(ET.SubElement(suite, "properties"), "property", name="verdict", value=result.verdict)
    counts = {"tests": 0, "failures": 0, "skipped": 0}

    def case(classname: str, case_name: str) -> ET.Element:
        counts["tests"] += 1
        return ET.SubElement(suite, "testcase", classname=classname, name=case_name, time="0")

    for check in result.artifact_checks:
        element = case("integrity", check.path)
        if not check.passed:
            counts["failures"] += 1
            ET.SubElement(element, "failure", message=f"{check.path}: {check.problem}")
    for comp in result.comparisons:
        element = case(f"numeric.{comp.backend}", f"{comp.artifact} batch={comp.batch}")
        metrics = "; ".join(f"{o.name}: max_abs={o.max_abs:.3g} max_rel={o.max_rel:.3g} "
                            f"mean_abs={o.mean_abs:.3g} cosine={o.cosine:.7f}" for o in comp.outputs)
        judged = [f"{o.name}: {statistic.describe()}" for o in comp.outputs
                  for statistic in o.statistics if comp.sampled]
        ET.SubElement(element, "system-out").text = "\n".join([f"precision {comp.compute_precision}; {metrics}",
                                                               *judged])
        if comp.failed:
            counts["failures"] += 1
            reasons = [f"{o.name}: {why}" for o in comp.outputs for why in o.failures]
            failure = ET.SubElement(element, "failure", message=reasons[0])
            failure.text = "\n".join(reasons)
        elif comp.not_judged is not None:
            counts["skipped"] += 1
            ET.SubElement(element, "skipped", message=f"not judged: {comp.not_judged}")
    skipped_cases = [(f"numeric.{s.backend}", f"{s.artifact} batch={s.batch}", s.reason) for s in result.skipped]
    skipped_cases += [("selection", o.artifact, f"left out: {o.reason}") for o in result.left_out]
    skipped_cases += [("unlisted", name, "not in the manifest: not checked") for name in result.unlisted]
    for classname, case_name, reason in skipped_cases:
        element = case(classname, case_name)
        counts["skipped"] += 1
        ET.SubElement(element, "skipped", message=reason)
    verdict = case("verification", "verdict")
    if result.verdict == "not judged":
        counts["skipped"] += 1
        names = ", ".join(dict.fromkeys(c.artifact for c in result.not_judged))
        ET.SubElement(verdict, "skipped", message=f"not judged: {names} ran on synthetic images only, so its "
                                                  "accuracy was not judged")
    elif not result.passed:
        counts["failures"] += 1
        unchecked = f": {', '.join(result.unchecked)} checked by no backend here" if result.unchecked else ""
        ET.SubElement(verdict, "failure", message=f"{result.verdict}{'' if result.failed else unchecked}")
    for key, value in counts.items():
        suite.set(key, str(value))
    suite.set("errors", "0")
    if result.notes:
        ET.SubElement(suite, "system-out").text = "\n".join(result.notes)
    ET.indent(suite)
    return ET.tostring(suite, encoding="utf-8", xml_declaration=True) + b"\n"


def write_junit(result: VerificationResult, path: str | Path, name: str = "xbuild verify") -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, junit_xml(result, name))
    except OSError as exc:
        raise UserError(f"--junit {path}: cannot write the report ({exc.strerror or exc})") from exc
