"""The selftest's results as a person, a script and a CI system read them:
a table, JSON, and JUnit XML (xml.etree; one testsuite, a testcase per
check, <failure> / <skipped message=why>, the host in <properties>)."""

import xml.etree.ElementTree as ET
from dataclasses import dataclass

STATUSES = ("pass", "fail", "skip")


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str  # one of STATUSES
    seconds: float
    detail: str  # what was measured, why it failed, or why it was skipped

    def to_json(self):
        return {"name": self.name, "status": self.status, "seconds": round(self.seconds, 3), "detail": self.detail}


def passed(results):
    """Exit status 0 only if every check that could run passed."""
    return all(r.status != "fail" for r in results)


def table(results, host_line):
    width = max(len(r.name) for r in results)
    lines = [f"kvmharness selftest on {host_line}", ""]
    lines += [f"{r.status.upper():<4}  {r.name:<{width}}  {r.seconds:6.1f}s  {r.detail}" for r in results]
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    lines += ["", f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped"]
    return "\n".join(lines) + "\n"


def to_json(results, host):
    return {"host": host, "passed": passed(results), "checks": [r.to_json() for r in results]}


def junit_xml(results, host):
    """A JUnit XML document (bytes) for CI test reports."""
    suite = ET.Element("testsuite", {
        "name": "kvmharness selftest",
        "tests": str(len(results)),
        "failures": str(sum(r.status == "fail" for r in results)),
        "errors": "0",
        "skipped": str(sum(r.status == "skip" for r in results)),
        "time": f"{sum(r.seconds for r in results):.3f}",
    })
    props = ET.SubElement(suite, "properties")
    for key, value in host.items():
        ET.SubElement(props, "property", {"name": key, "value": str(value)})
    for r in results:
        case = ET.SubElement(suite, "testcase", {"classname": "kvmharness.selftest", "name": r.name,
                                                 "time": f"{r.seconds:.3f}"})
        if r.status == "fail":
            ET.SubElement(case, "failure", {"message": r.detail.splitlines()[0] if r.detail else "failed"}).text = \
                r.detail
        elif r.status == "skip":
            ET.SubElement(case, "skipped", {"message": r.detail})
        else:
            ET.SubElement(case, "system-out").text = r.detail
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
