"""`neupims-sim dram`: the summary and its JSON, DRAMsim3's command-trace layout, and bad inputs
that end in one line on stderr, exit 2 and no output left behind."""

import json
from pathlib import Path

import pytest

from neupims_py.cli import main
from neupims_py.dram import cli

REPO = Path(__file__).resolve().parents[1]
HW = str(REPO / "hwconfigs" / "hbm2-8gb-x128.yaml")
STREAM_RD = str(REPO / "traces" / "dram" / "stream_rd_10k.trace")
CH0 = "dramsim3ch_0cmd.trace"


def test_stream_summary_and_json(tmp_path, capsys):
    out = tmp_path / "stats.json"
    assert main(["dram", HW, STREAM_RD, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    total = report["total"]
    assert total["cycles"] == 10171  # DRAMsim3's figures (traces/dram/README.md)
    assert total["act"] == 317
    assert total["ref"] == 16
    assert total["reads"] == 10_000 and total["writes"] == 0
    assert report["requests"] == 10_000
    assert [c["channel"] for c in report["channels"]] == list(range(8))
    assert sum(c["act"] for c in report["channels"]) == 317
    stdout = capsys.readouterr().out
    assert "cycles 10,171" in stdout
    total_row = next(line for line in stdout.splitlines() if line.lstrip().startswith("total"))
    assert total_row.split()[1:6] == ["10,000", "0", "317", "244", "16"]
    assert [p.name for p in tmp_path.iterdir()] == ["stats.json"]  # no temporary left


def test_csv_trace_gives_the_same_counts(tmp_path):
    lines = Path(STREAM_RD).read_text().splitlines()[:500]
    csv = tmp_path / "t.csv"
    rows = (line.split() for line in lines)
    csv.write_text("addr,op,cycle\n" + "".join(
        f"{int(a, 16)},{'W' if op == 'WRITE' else 'R'},{c}\n" for a, op, c in rows))
    ds3 = tmp_path / "t.trace"
    ds3.write_text("\n".join(lines) + "\n")
    reports = []
    for trace, fmt in ((csv, "csv"), (ds3, "auto")):
        out = tmp_path / (trace.name + ".json")
        assert main(["dram", HW, str(trace), "--format", fmt, "--json", str(out)]) == 0
        reports.append(json.loads(out.read_text())["total"])
    assert reports[0] == reports[1]


def test_command_trace_is_dramsim3s_byte_for_byte(tmp_path, shared_dir):
    micro = shared_dir / "reference" / "dramsim3-micro"
    out = tmp_path / "cmds"
    assert main(["dram", HW, str(micro / "m3_row_conflict.trace"), "--cmd-trace", str(out)]) == 0
    expected = (micro / "m3_row_conflict.expected-cmds").read_bytes()
    assert (out / CH0).read_bytes() == expected
    assert sorted(p.name for p in out.iterdir()) == [f"dramsim3ch_{c}cmd.trace" for c in range(8)]
    assert (out / "dramsim3ch_1cmd.trace").read_bytes() == b""
    assert [p.name for p in tmp_path.iterdir()] == ["cmds"]  # no staging directory left


def test_command_trace_into_an_existing_directory(tmp_path):
    out = tmp_path / "cmds"
    out.mkdir()
    (out / "notes.txt").write_text("kept")
    (out / CH0).write_text("stale")
    trace = tmp_path / "t.trace"
    trace.write_text("0x0 READ 0\n")
    assert main(["dram", HW, str(trace), "--cmd-trace", str(out)]) == 0
    assert (out / CH0).read_text().startswith("2                  activate")
    assert (out / "notes.txt").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmds", "t.trace"]


def test_interrupted_replay_leaves_no_command_trace(tmp_path, monkeypatch, capsys):
    real = cli.replay

    def interrupted(*args, on_log_chunk=None, **kwargs):
        result = real(*args, on_log_chunk=on_log_chunk, **kwargs)
        if on_log_chunk is not None:  # the logged replay, after its files were written
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(cli, "replay", interrupted)
    code = main(["dram", HW, STREAM_RD, "--cmd-trace", str(tmp_path / "cmds"),
                 "--json", str(tmp_path / "s.json")])
    assert code == 130
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content,words", [
    ("0x0 READ 0\n0x40 READ\n", "line 2: 2 fields where 3 are expected"),
    ("0x0 READ 0\n0x40 FETCH 1\n", "line 2: unknown operation 'FETCH'"),
    ("0x0 READ 3\n0x40 READ 1\n", "line 2: cycle 1 is earlier than"),
    ("0x0 READ 0\n\n0x200000000 READ 1\n", "line 3: address 0x200000000 is beyond the memory's "
     "capacity of 0x200000000 bytes (8 channels x 1024 MiB)"),
    ("", "the trace has no requests"),
])
def test_bad_trace_exits_2_and_writes_nothing(tmp_path, capsys, content, words):
    trace = tmp_path / "bad.trace"
    trace.write_text(content)
    code = main(["dram", HW, str(trace), "--json", str(tmp_path / "s.json"),
                 "--cmd-trace", str(tmp_path / "cmds")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"neupims-sim: error: {trace}: {words}"), err
    assert len(err.strip().splitlines()) == 1  # one line, no traceback
    assert [p.name for p in tmp_path.iterdir()] == ["bad.trace"]


@pytest.mark.parametrize("extra,words", [
    (["--max-inject-per-cycle", "0"], "--max-inject-per-cycle: must be at least 1"),
    (["--json", "no/such/dir/s.json"], "--json: the directory 'no/such/dir' does not exist"),
    (["-p", "memory.geometry.chanels=4"], "chanels"),
])
def test_bad_options_exit_2(capsys, extra, words):
    assert main(["dram", HW, STREAM_RD, *extra]) == 2
    assert words in capsys.readouterr().err
