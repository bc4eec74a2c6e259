"""`neupims-sim trace import`: every format from small files written here, the options, and bad files."""

import json

import numpy as np
import pytest

from neupims_py.cli import main
from neupims_py.errors import UserError
from neupims_py.workload import load_trace
from neupims_py.workload.importers import ImportOptions, clip_lengths, import_trace, importer

S = 1_000_000_000


def run(*argv):
    return main(["trace", *map(str, argv)])


def imported(tmp_path, name, text, fmt, *options):
    src = tmp_path / name
    src.write_text(text)
    out = tmp_path / (name + ".h5")
    assert run("import", src, "--format", fmt, "--out", out, *options) == 0
    return load_trace(out)


def columns(trace):
    r = trace.requests
    return r["arrival_ns"].tolist(), r["prompt_tokens"].tolist(), r["output_tokens"].tolist()


def test_azure(tmp_path):
    text = (
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:47.0000001,396,109\n"
        "2023-11-16 18:16:00,879,20\n"
    )
    trace = imported(tmp_path, "azure.csv", text, "azure")
    # 47.0000001 - 46.68059 = 0.3194101 s; 18:16:00 - 18:15:46.68059 = 13.31941 s
    assert columns(trace) == ([0, 319_410_100, 13_319_410_000], [374, 396, 879], [44, 109, 20])
    assert trace.attrs["arrival_process"] == "file"
    # 2023-11-16 18:15:46 UTC is 1700158546 s after the epoch.
    assert json.loads(trace.attrs["arrival_params"])["time_offset_ns"] == 1_700_158_546_680_590_000


def test_azure_time_zones_and_day_change(tmp_path):
    text = (
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2024-05-10T23:59:59.5+02:00,1,1\n"
        "2024-05-10 22:00:00.25Z,2,2\n"  # 22:00:00.25 UTC = 00:00:00.25+02:00, 0.75 s later
    )
    trace = imported(tmp_path, "az.csv", text, "azure")
    assert trace.requests["arrival_ns"].tolist() == [0, 750_000_000]


def test_vidur(tmp_path):
    text = "arrived_at,num_prefill_tokens,num_decode_tokens,extra\n0.5,10,20,x\n0.75,11,21,y\n2.125,12,22,z\n"
    assert columns(imported(tmp_path, "v.csv", text, "vidur")) == (
        [0, 250_000_000, 1_625_000_000],
        [10, 11, 12],
        [20, 21, 22],
    )


def test_llmservingsim_jsonl_and_tsv(tmp_path):
    jsonl = (
        '{"input_toks": 8, "output_toks": 3, "arrival_time_ns": 100, "model": "gpt3"}\n'
        "\n"
        '{"input_toks": 9, "output_toks": 4, "arrival_time_ns": 1100}\n'
    )
    tsv = "input_toks\toutput_toks\tarrival_time_ns\n8\t3\t100\n9\t4\t1100\n"
    expected = ([0, 1000], [8, 9], [3, 4])
    assert columns(imported(tmp_path, "l.jsonl", jsonl, "llmservingsim")) == expected
    assert columns(imported(tmp_path, "l.tsv", tsv, "llmservingsim")) == expected


def test_mooncake(tmp_path, capsys):
    text = (
        '{"timestamp": 0, "input_length": 6755, "output_length": 500, "hash_ids": [0, 1, 2]}\n'
        '{"timestamp": 27482, "input_length": 7319, "output_length": 490, "hash_ids": [0, 1, 3]}\n'
    )
    trace = imported(tmp_path, "m.jsonl", text, "mooncake")
    assert columns(trace) == ([0, 27_482_000_000], [6755, 7319], [500, 490])
    assert "hash_ids ignored" in trace.attrs["notes"]
    assert "hash_ids ignored" in capsys.readouterr().out


def test_dejavu_needs_and_uses_an_arrival_process(tmp_path, capsys):
    src = tmp_path / "d.json"
    src.write_text("[[10, 5], [20, 6], [30, 7]]")
    out = tmp_path / "d.h5"
    assert run("import", src, "--format", "dejavu", "--out", out) == 2
    assert "no arrival times" in capsys.readouterr().err
    assert (
        run("import", src, "--format", "dejavu", "--out", out, "--arrival", "fixed", "--rate", 2)
        == 0
    )
    assert columns(load_trace(out)) == ([0, 500_000_000, 1_000_000_000], [10, 20, 30], [5, 6, 7])


def test_lengths_csv_with_poisson(tmp_path):
    trace = imported(
        tmp_path,
        "len.csv",
        "input_toks,output_toks\n5,6\n7,8\n",
        "lengths",
        "--rate",
        3,
        "--seed",
        4,
    )
    assert trace.requests["prompt_tokens"].tolist() == [5, 7]
    assert trace.attrs["arrival_process"] == "poisson" and trace.attrs["seed"] == 4
    assert trace.requests["arrival_ns"][0] == 0 and trace.requests["arrival_ns"][1] > 0


def test_start_limit_time_scale_and_drop_zero_output(tmp_path, capsys):
    text = "arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,1\n1,2,0\n2,3,3\n3,4,4\n4,5,5\n"
    trace = imported(
        tmp_path,
        "v.csv",
        text,
        "vidur",
        "--drop-zero-output",
        "--start",
        1,
        "--limit",
        2,
        "--time-scale",
        0.5,
    )
    # Kept after dropping row 2 (output 0): times 0,2,3,4 -> skip one -> 2,3 -> shift, halve.
    assert columns(trace) == ([0, 500_000_000], [3, 4], [3, 4])
    assert trace.attrs["dropped_zero_output"] == 1
    assert "dropped 1 requests with no output tokens" in capsys.readouterr().out


def test_max_tokens_clips_prompt_first_and_reports(tmp_path, capsys):
    text = "input_toks,output_toks\n3000,10\n100,5000\n2040,10\n50,60\n"
    trace = imported(
        tmp_path, "c.csv", text, "lengths", "--arrival", "at-once", "--max-tokens", 2048
    )
    assert trace.requests["prompt_tokens"].tolist() == [2047, 100, 2040, 50]
    assert trace.requests["output_tokens"].tolist() == [1, 1948, 8, 60]
    assert trace.attrs["clipped"] == 3
    assert "clipped 3 requests" in capsys.readouterr().out


def test_clip_lengths_never_exceeds_the_cap():
    rng = np.random.default_rng(0)
    prompt, output = rng.integers(0, 5000, 1000), rng.integers(0, 5000, 1000)
    new_prompt, new_output, changed = clip_lengths(prompt, output, 1000)
    assert (new_prompt + new_output <= 1000).all()
    assert changed == int(((prompt + output) > 1000).sum())
    small = prompt + output <= 1000
    assert (new_prompt[small] == prompt[small]).all() and (new_output[small] == output[small]).all()


def test_unknown_format_lists_the_valid_ones():
    with pytest.raises(UserError, match="azure, vidur, llmservingsim, mooncake, dejavu, lengths"):
        importer("splitwise")


def test_python_api_without_the_cli(tmp_path):
    src = tmp_path / "v.csv"
    src.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n1.5,2,3\n")
    requests, attrs, report = import_trace(str(src), "vidur", ImportOptions())
    assert requests["arrival_ns"].tolist() == [0] and attrs["source"] == "vidur:v.csv"


# Each bad file gets its own message, naming the file and the line, and exit code 2.
@pytest.mark.parametrize(
    "name, fmt, text, expected",
    [
        (
            "a.csv",
            "vidur",
            "arrived_at,num_prefill_tokens\n0,1\n",
            "line 1: missing column(s) num_decode_tokens",
        ),
        (
            "b.csv",
            "vidur",
            "arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,2\n1,-4,2\n",
            "line 3: num_prefill_tokens: '-4' is negative",
        ),
        (
            "c.csv",
            "azure",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.1,abc,3\n",
            "line 2: ContextTokens: 'abc' is not a whole number",
        ),
        (
            "d.csv",
            "vidur",
            "arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,2\n5,1,2\n3,1,2\n",
            "line 4: arrival time is earlier than on line 3; sort the file by time",
        ),
        (
            "e.csv",
            "azure",
            "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,2\n",
            "line 2: TIMESTAMP: 'yesterday' is not a date-time",
        ),
        (
            "f.jsonl",
            "mooncake",
            '{"timestamp": 1, "input_length": 2}\n',
            "line 1: missing key 'output_length'",
        ),
        (
            "g.jsonl",
            "llmservingsim",
            '{"input_toks": 1, "output_toks": 2, "arrival_time_ns": 0}\n{"input_toks": 1,\n',
            "line 2: not valid JSON",
        ),
        ("h.json", "dejavu", "[[1, 2], [3]]", "item 1: [3] is not a pair"),
        (
            "i.json",
            "dejavu",
            "[[1, 2.5]]",
            "item 0: num_generated_tokens: 2.5 is not a whole number",
        ),
        (
            "l.jsonl",
            "mooncake",
            '{"timestamp": 1, "input_length": "many", "output_length": 2}\n',
            "line 1: input_length: 'many' is not a whole number",
        ),
        (
            "m.jsonl",
            "mooncake",
            '{"timestamp": 1, "input_length": true, "output_length": 2}\n',
            "line 1: input_length: true is not a whole number",
        ),
        (
            "n.csv",
            "lengths",
            "input_toks,output_toks\n99999999999999999999,1\n",
            "line 2: input_toks: '99999999999999999999' is above 2,147,483,647",
        ),
        ("j.csv", "lengths", "input_toks,output_toks\n", "holds no requests"),
        (
            "k.csv",
            "vidur",
            "arrived_at,num_prefill_tokens,num_decode_tokens\nsoon,1,2\n",
            "line 2: arrived_at: 'soon' is not a number",
        ),
    ],
)
def test_bad_files(tmp_path, capsys, name, fmt, text, expected):
    src = tmp_path / name
    src.write_text(text)
    out = tmp_path / "out.h5"
    code = (
        run("import", src, "--format", fmt, "--out", out, "--rate", 1)
        if fmt in ("dejavu", "lengths")
        else run("import", src, "--format", fmt, "--out", out)
    )
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err and str(src) in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not out.exists()


def test_missing_file(tmp_path, capsys):
    assert (
        run("import", tmp_path / "none.csv", "--format", "vidur", "--out", tmp_path / "o.h5") == 2
    )
    assert "no such file" in capsys.readouterr().err


def test_time_scale_with_generated_arrivals_is_refused(tmp_path, capsys):
    src = tmp_path / "v.csv"
    src.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,2\n")
    assert (
        run(
            "import",
            src,
            "--format",
            "vidur",
            "--out",
            tmp_path / "o.h5",
            "--rate",
            2,
            "--time-scale",
            2,
        )
        == 2
    )
    assert "--time-scale" in capsys.readouterr().err
