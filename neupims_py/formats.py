"""Every record that crosses a layer boundary: opcodes, numpy dtypes, file format versions.

The engine imports this module and nothing else from the package, so everything here is
plain data (IntEnum values are lowered to ints before they reach a kernel). All cycles are
int64 memory-clock cycles unless a field says otherwise.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Cmd(IntEnum):
    """DRAM and PIM command opcodes. Stable: they are stored in command traces and stats."""

    ACT = 0  # activate a row (normal row buffer)
    RD = 1  # column read, open page
    WR = 2  # column write, open page
    RDA = 3  # read with auto-precharge (close page)
    WRA = 4  # write with auto-precharge (close page)
    PRE = 5  # precharge one bank
    REF = 6  # all-bank refresh of one rank
    REFB = 7  # per-bank refresh
    # PIM (Newton/AiM-style, NeuPIMs): see DESIGN.md
    GWRITE = 8  # load one row's chunk into the channel's global buffer
    G_ACT = 9  # activate one row in the PIM row buffers of the 4 banks of a bank group
    COMP = 10  # every bank: 16 MACs of its open PIM row against the global buffer
    READRES = 11  # read the per-bank accumulators back
    COMPS_READRES = 12  # k COMPs then a READRES, one command (NeuPIMs)
    PIM_HEADER = 13  # announces a GEMV on a row: reserve it, check the refresh deadline
    PIM_PRECHARGE = 14  # close the PIM row buffers of a bank group


NUM_CMDS = len(Cmd)

# Names as DRAMsim3 spells them in its command trace (`--cmd-trace`).
DRAMSIM3_CMD_NAMES = {
    Cmd.ACT: "activate",
    Cmd.RD: "read",
    Cmd.WR: "write",
    Cmd.RDA: "read_p",
    Cmd.WRA: "write_p",
    Cmd.PRE: "precharge",
    Cmd.REF: "refresh",
    Cmd.REFB: "refresh_bank",
    Cmd.GWRITE: "gwrite",
    Cmd.G_ACT: "g_act",
    Cmd.COMP: "comp",
    Cmd.READRES: "readres",
    Cmd.COMPS_READRES: "comps_readres",
    Cmd.PIM_HEADER: "pim_header",
    Cmd.PIM_PRECHARGE: "pim_precharge",
}


class Op(IntEnum):
    """Memory request kind in a DRAM request trace."""

    READ = 0
    WRITE = 1


# One memory request of a DRAM trace (`neupims-sim dram`): the engine's input.
DRAM_REQUEST_DTYPE = np.dtype(
    [
        ("addr", np.uint64),  # byte address
        ("op", np.int8),  # Op
        ("cycle", np.int64),  # earliest cycle the front end may offer it
    ]
)

# One issued command, as recorded by the engine when a command log is asked for.
COMMAND_RECORD_DTYPE = np.dtype(
    [
        ("cycle", np.int64),  # issue cycle
        ("cmd", np.int8),  # Cmd
        ("channel", np.int16),
        ("rank", np.int16),
        ("bankgroup", np.int16),
        ("bank", np.int16),  # bank within its bank group
        ("row", np.int32),
        ("column", np.int32),  # column in bursts (DRAMsim3's column field)
    ]
)

# Version of every HDF5 file this package writes (trace.h5, results); checked on load.
TRACE_FORMAT_VERSION = 1


class Stat(IntEnum):
    """Engine counters: rows of the int64 per-channel stats array (``stats[channel, Stat.X]``)."""

    READS_DONE = 0  # read requests returned (including ones served from the write buffer)
    WRITES_DONE = 1  # write requests accepted (posted)
    READ_LATENCY_SUM = 2  # sum over returned reads of (return cycle - cycle accepted)
    ACT = 3
    RD = 4
    WR = 5
    RDA = 6
    WRA = 7
    PRE = 8  # every precharge (on-demand and for refresh)
    REF = 9
    READ_ROW_HITS = 10  # RD/RDA to a row that an earlier column command already hit
    WRITE_ROW_HITS = 11
    ONDEMAND_PRE = 12  # precharges that closed a row for a waiting miss (row conflicts)
    DUAL_CMDS = 13  # cycles where a second (row + column) command issued
    DATA_BUS_CYCLES = 14  # cycles the data bus carried a burst
    RANK_ACTIVE_CYCLES = 15  # summed over ranks: cycles with at least one open bank
    WRITES_ISSUED = 16  # WR/WRA commands issued (posted writes leaving the buffer)
    READS_FORWARDED = 17  # reads served from the write buffer
    GWRITE = 18
    G_ACT = 19
    COMP = 20  # single COMP commands (Newton-style)
    READRES = 21
    COMPS_READRES = 22
    PIM_HEADER = 23
    PIM_PRECHARGE = 24
    PIM_COMPS = 25  # COMP operations in total, including those inside COMPS_READRES
    PIM_BUSY_CYCLES = 26  # cycles a channel's PIM units were busy
    PIM_BLOCKED_CYCLES = 27  # cycles normal commands waited because the channel was in PIM mode


NUM_STATS = len(Stat)

# Read-latency histogram: bins of READ_LAT_BIN cycles; the last bin collects the overflow.
READ_LAT_BIN = 8
READ_LAT_BINS = 128


# One request of a trace.h5 file (dataset `requests`, see neupims_py/workload/trace_file.py),
# rows sorted by arrival_ns. A multi-turn conversation is a session: its turns are separate
# rows, and the serving loop releases turn k only think_time_ns after turn k-1 finished.
# The prefill of a request covers history_tokens + prompt_tokens.
TRACE_REQUEST_DTYPE = np.dtype(
    [
        ("id", np.int64),  # request id, unique within the file (0..n-1 in arrival order when generated)
        ("arrival_ns", np.int64),  # arrival time in integer nanoseconds from the trace start; for a
        # later turn, the earliest it can arrive: previous turn's arrival_ns + think_time_ns
        ("session_id", np.int64),  # conversation this request is a turn of; -1 when none
        ("think_time_ns", np.int64),  # gap between the previous turn's last token and this turn's
        # arrival; 0 for turn 0 and for requests without a session
        ("prompt_tokens", np.int32),  # this turn's new prompt tokens only (history excluded)
        ("output_tokens", np.int32),  # tokens to generate
        ("history_tokens", np.int32),  # conversation context carried into this turn: all earlier
        # turns' prompt + output tokens; 0 for turn 0 and for requests without a session
        ("turn", np.int32),  # 0-based turn number within its session; -1 when no session
        ("adapter_id", np.int32),  # LoRA adapter (multi-tenant serving); -1 when none
    ]
)
