"""The workload layer: request traces (trace.h5) and the tools that make them.

The serving loop needs only ``load_trace(path) -> Trace`` (``Trace.requests`` is a
structured array of ``neupims_py.formats.TRACE_REQUEST_DTYPE``, ``Trace.attrs`` a dict) and
``write_trace(path, requests, attrs)``.
"""

from neupims_py.workload.trace_file import Trace, load_trace, write_trace

__all__ = ["Trace", "load_trace", "write_trace"]
