"""`bench --compare` on the committed results of two hosts (the AMD runner's
full bench, the Intel runner's quick one): one table with each host's kind,
CPU, kernel and first-write cost, the cells both measured, and one plot;
fields a file lacks read "unknown"; a bad file is a one-line error."""

import json
import pathlib

from test_bench import _png_ok

ROOT = pathlib.Path(__file__).resolve().parent.parent
AMD = ROOT / "docs/results/bench/results.json"
INTEL = ROOT / "docs/results/bench-quick-random/results.json"


def test_two_hosts_side_by_side(cli, tmp_path):
    out = cli("bench", "--compare", str(AMD), str(INTEL), "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    table = (tmp_path / "compare.md").read_text()
    hosts = [line for line in table.splitlines() if line.startswith(("| A |", "| B |"))]
    assert "| nested | AMD EPYC | 2 | 6.18.44-fc-v669 | 2.44 |" in hosts[0]
    assert "| nested | Intel(R) Xeon(R) Processor | 2 | 6.18.44-fc-v657 | 9.67 |" in hosts[1]
    rows = [line for line in table.splitlines() if line.startswith("| random | 1 GiB |")]
    assert len(rows) == 3 * 5  # the quick bench's cells, which the full bench has too
    # the cell of both files, as each results.json has it
    amd = {(c["mode"], c["calc-time-ms"]): c for c in json.loads(AMD.read_text())["cells"] if c["size"] == 1 << 30}
    row = next(r for r in rows if "| dirty-bitmap | 500 |" in r)
    assert f"| {amd[('dirty-bitmap', 500)]['median']:.0f} [" in row
    assert table in out.stdout
    _png_ok(tmp_path / "compare.png")


def test_missing_fields_read_unknown(cli, tmp_path):
    data = json.loads(INTEL.read_text())
    del data["probe"]["calibration"], data["probe"]["kernel"], data["plan"]["pattern"]
    data["host"]["description"] = "somewhere"
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    out = cli("bench", "--compare", str(INTEL), str(old), "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    b = next(line for line in out.stdout.splitlines() if line.startswith("| B |"))
    assert b.count("unknown") == 3  # CPUs, kernel, first write


def test_bad_input_is_one_line(cli, tmp_path):
    (tmp_path / "x.json").write_text("{}")
    for args, message in [((str(INTEL),), "at least two"),
                          ((str(INTEL), str(tmp_path / "x.json")), "is not a kvmharness bench results.json"),
                          ((str(INTEL), str(tmp_path / "none.json")), "cannot read")]:
        out = cli("bench", "--compare", *args, "--out", str(tmp_path))
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and message in out.stderr, out.stderr
