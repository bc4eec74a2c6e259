"""The one decorator every engine kernel uses.

Kernels never allocate: they write into arrays the caller owns. Compiling them without
Numba's reference-counting runtime (``_nrt=False``) removes an incref/decref pair per
array argument on every call (about 18 ns per array: with the state NamedTuples that was
most of the run time), and lets LLVM inline freely. ``cache=True`` keeps the compiled
code on disk so a second process starts in well under a second.
"""

from numba import njit


def kernel(fn=None, **options):
    opts = {"cache": True, "nogil": True, "_nrt": False}
    opts.update(options)
    if fn is None:
        return lambda f: njit(**opts)(f)
    return njit(**opts)(fn)
