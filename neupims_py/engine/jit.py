"""The one decorator every engine kernel uses.

Kernels never allocate: they write into arrays the caller owns. Compiling them without
Numba's reference-counting runtime (``_nrt=False``) removes an incref/decref pair per
array argument on every call (about 18 ns per array: with the state NamedTuples that was
most of the run time), and lets LLVM inline freely. ``cache=True`` keeps the compiled
code on disk so a second process starts in well under a second.

A call between kernels passes every field of every array of every NamedTuple argument
(Numba flattens them: a few hundred words for the engine's state), so the per-cycle path
(``run_requests`` -> ``_tick_channel`` -> scan / issue / move) is inlined with
``inline="always"``; each inlined body is compiled once per call site, so those functions
keep a single call site on that path (``_issue_call`` / ``_first_ready_call`` serve the
rare paths). That costs compile time (about a minute, once, then cached), not run time.
"""

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils, config
from numba.extending import intrinsic


def kernel(fn=None, **options):
    opts = {"cache": True, "nogil": True, "_nrt": False}
    opts.update(options)
    if fn is None:
        return lambda f: njit(**opts)(f)
    return njit(**opts)(fn)


if config.DISABLE_JIT:

    def ctz(x):
        """Index of the lowest set bit of x (> 0)."""
        x = int(x)
        return (x & -x).bit_length() - 1

    def prefetch_row(a, i):
        """Start loading row i of the 2-D array a into the cache (no effect on results)."""

else:

    @intrinsic
    def _prefetch(typingctx, addr):
        def codegen(context, builder, signature, args):
            i8p = ir.IntType(8).as_pointer()
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch")
            # read, keep in all cache levels, data
            builder.call(fn, [builder.inttoptr(args[0], i8p), ir.Constant(i32, 0), ir.Constant(i32, 3),
                              ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return types.void(types.int64), codegen

    @njit(cache=True, nogil=True, _nrt=False, inline="always")
    def prefetch_row(a, i):
        """Start loading row i of the 2-D array a into the cache (no effect on results)."""
        _prefetch(a.ctypes.data + i * a.strides[0])

    @intrinsic
    def _cttz(typingctx, x):
        def codegen(context, builder, signature, args):
            return builder.cttz(args[0], ir.Constant(ir.IntType(1), 0))

        return types.int64(types.int64), codegen

    @njit(cache=True, nogil=True, _nrt=False, inline="always")
    def ctz(x):
        """Index of the lowest set bit of x (> 0): LLVM's cttz."""
        return _cttz(x)
