"""`neupims-sim iteration`: batch files in both layouts, the report, the JSON, and bad input
(exit 2, a message naming the file, line and field, no output file)."""

import json
from pathlib import Path

import pytest

from neupims_py.cli import main
from neupims_py.compiler.cli import read_batch
from neupims_py.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SNAPSHOT = REPO / "traces" / "batches" / "neupims-snapshot-64.csv"

# GPT-3 architecture at a small size: a layer's weights are 6 MiB, not a GPT3-7B shard's 96
TINY_MODEL = """\
name: gpt3-tiny
layers: 4
d_model: 512
heads: 4
ffn_dim: 2048
ffn_kind: gelu
norm: layernorm
rotary: false
vocab: 50304
dtype_bytes: 2
tp: 1
"""


@pytest.fixture
def tiny(tmp_path) -> str:
    path = tmp_path / "gpt3-tiny.yaml"
    path.write_text(TINY_MODEL)
    return str(path)


def write(tmp_path, name, text) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_shipped_snapshot_is_64_sharegpt_like_requests_round_robin():
    lines = SNAPSHOT.read_text().splitlines()
    assert lines[0] == "seq_len,ch_idx"
    rows = [tuple(map(int, line.split(","))) for line in lines[1:]]
    assert len(rows) == 64
    assert all(50 <= s <= 600 for s, _ in rows)
    assert [c for _, c in rows] == [i % 32 for i in range(64)]
    entries = read_batch(SNAPSHOT, 32)
    assert [(e.q_len, e.kv_len, e.channel) for e in entries] == [(1, s, c) for s, c in rows]


def test_q_kv_layout_channels_round_robin_when_absent(tmp_path):
    path = write(tmp_path, "b.csv", "q_len,kv_len\n1,10\n16,0\n\n1,300\n")
    assert [(e.req, e.q_len, e.kv_len, e.channel) for e in read_batch(path, 2)] == [
        (0, 1, 10, 0), (1, 16, 0, 1), (2, 1, 300, 0)]
    path = write(tmp_path, "c.csv", "kv_len,ch_idx,q_len\n10,5,1\n")
    assert [(e.q_len, e.kv_len, e.channel) for e in read_batch(path, 32)] == [(1, 10, 5)]


def test_gpt3_7b_one_layer_on_the_shipped_snapshot(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main(["iteration", "neupims", "--model", "gpt3-7b", "--batch", str(SNAPSHOT),
                 "--layers", "1", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "one decoder layer simulated (--layers 1), as the NeuPIMs simulator does" in text
    assert "not the 32-layer iteration" in text
    report = json.loads(out.read_text())
    assert report["layers"] == 1 and report["mode"] == "neupims"
    assert report["requests"] == 64
    assert isinstance(report["cycles"], int) and report["cycles"] > 0
    assert f"total cycles {report['cycles']:,}" in text
    # 64 requests < the preset's threshold of 256: no sub-batches; one layer's weights read
    assert report["sub_batches"] == 1
    assert sum(report["ops"][g]["bytes"] for g in ("qkv", "proj", "ffn1", "ffn2")) == (
        2 * 4096 * (3 * 1024 + 1024 + 4096 + 4096))
    assert report["dram"]["pim_header"] > 0
    assert not list(tmp_path.glob(".*"))  # no temporary file left


@pytest.mark.parametrize("mode", ["npu-only", "npu+pim", "neupims"])
def test_mode_flag_gives_the_matching_presets_system(tmp_path, tiny, mode):
    """--mode on any preset runs what the preset of that mode runs (same cycles)."""
    preset = {"npu-only": "npu-only", "npu+pim": "npu-pim", "neupims": "neupims"}[mode]
    batch = write(tmp_path, "b.csv", "q_len,kv_len\n1,100\n1,40\n8,0\n")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    other = "npu-only" if preset != "npu-only" else "neupims"
    args = ["--model", tiny, "--batch", batch, "--layers", "1", "-p",
            "system.sub_batch_threshold=2"]
    assert main(["iteration", other, "--mode", mode, *args, "--json", str(a)]) == 0
    assert main(["iteration", preset, *args, "--json", str(b)]) == 0
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    assert ra["mode"] == rb["mode"] == mode
    assert ra["cycles"] == rb["cycles"]
    assert ra["sub_batches"] == (2 if mode == "neupims" else 1)


def test_reuse_and_exact_cover_all_layers(tmp_path, tiny, capsys):
    batch = write(tmp_path, "b.csv", "q_len,kv_len,ch_idx\n1,100,0\n1,40,1\n")
    out = tmp_path / "r.json"
    assert main(["iteration", "npu-pim", "--model", tiny, "--batch", batch, "--reuse", "fast",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 layers simulated, the steady one repeated for the rest" in text
    reuse = json.loads(out.read_text())
    assert main(["iteration", "npu-pim", "--model", tiny, "--batch", batch, "--exact",
                 "--json", str(out)]) == 0
    exact = json.loads(out.read_text())
    assert (reuse["layers"], reuse["layers_simulated"], reuse["exact"]) == (4, 2, False)
    assert (exact["layers"], exact["layers_simulated"], exact["exact"]) == (4, 4, True)
    assert reuse["ops"]["qkv"]["bytes"] == exact["ops"]["qkv"]["bytes"] == 4 * 512 * 1536 * 2
    assert abs(reuse["cycles"] - exact["cycles"]) <= 0.02 * exact["cycles"]


BAD = [
    ("missing.csv", None, "no such file"),
    ("b.csv", "", "the file is empty"),
    ("b.csv", "seq_len,ch_idx\n", "the file has a header but no requests"),
    ("b.csv", "len,ch\n1,2\n", "line 1: header 'len,ch' names neither layout"),
    ("b.csv", "seq_len\n100\n", "line 1: the header lacks column 'ch_idx'"),
    ("b.csv", "q_len,ch_idx\n1,0\n", "line 1: the header lacks column 'kv_len'"),
    ("b.csv", "q_len,kv_len,prio\n1,2,3\n", "line 1: unknown column 'prio'"),
    ("b.csv", "seq_len,ch_idx\n100,0\n\n-5,1\n", "line 4: seq_len = -5; it must be at least 1"),
    ("b.csv", "q_len,kv_len\n1,-1\n", "line 2: kv_len = -1; it must be at least 0"),
    ("b.csv", "q_len,kv_len\n0,10\n", "line 2: q_len = 0; it must be at least 1"),
    ("b.csv", "q_len,kv_len\n1,1e3\n", "line 2: kv_len '1e3' is not an integer"),
    ("b.csv", "seq_len,ch_idx\n100,32\n",
     "line 2: ch_idx = 32 is not a channel of the configuration (0 .. 31)"),
    ("b.csv", "seq_len,ch_idx\n100,3,4\n", "line 2: 3 values for the 2 columns"),
]


@pytest.mark.parametrize("name,text,message", BAD, ids=[b[2] for b in BAD])
def test_bad_batch_files_exit_2_naming_file_line_field(tmp_path, tiny, capsys, name, text,
                                                        message):
    batch = tmp_path / name
    if text is not None:
        batch.write_text(text)
    out = tmp_path / "r.json"
    code = main(["iteration", "neupims", "--model", tiny, "--batch", str(batch), "--json",
                 str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"neupims-sim: error: {batch}: {message}" in err
    assert not out.exists()
    with pytest.raises(UserError) as exc:
        read_batch(batch, 32)
    assert str(exc.value).startswith(f"{batch}: {message}")


@pytest.mark.parametrize("argv,message", [
    (["--layers", "0"], "--layers: must be 1 .. 4"),
    (["--layers", "5"], "--layers: must be 1 .. 4"),
    (["--json", "/nonexistent-dir/r.json"],
     "--json: the directory '/nonexistent-dir' does not exist"),
    (["-p", "system.mode=neupims", "-p", "memory.pim.enabled=false"],
     "memory.pim.enabled is false"),
])
def test_bad_options_exit_2(tmp_path, tiny, capsys, argv, message):
    batch = write(tmp_path, "b.csv", "q_len,kv_len\n1,10\n")
    code = main(["iteration", "neupims", "--model", tiny, "--batch", batch, *argv])
    assert code == 2
    assert message in capsys.readouterr().err


def test_kv_cache_that_does_not_fit_its_channel_exits_2(tmp_path, tiny, capsys):
    # E = 512: a K row per 32 tokens and 16 V rows per 512 tokens, so 10^6 tokens need 62,515
    # rows in every bank of the channel, which has 32,768
    batch = write(tmp_path, "b.csv", "q_len,kv_len\n1,1000000\n")
    out = tmp_path / "r.json"
    assert main(["iteration", "neupims", "--model", tiny, "--batch", batch, "--json",
                 str(out)]) == 2
    assert "does not fit in channel 0" in capsys.readouterr().err
    assert not out.exists()
