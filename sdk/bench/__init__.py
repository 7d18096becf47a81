"""`minivlm bench`: speed, memory and size of a model in PyTorch eager, ONNX Runtime and its builds, measured on
real inputs through the same host code; with `versus`, several models side by side (docs/BENCHMARKS.md).

`run.py` runs it (`run_bench`), `workload.py` makes the inputs, `onnx_graphs.py` the ONNX Runtime peer,
`worker.py` measures one runtime in its own process, `measure.py` holds the measurements, `machine.py` the
machine's description, `report.py`, `compare.py` (models against the baseline) and `plot.py` the outputs.
"""

from .run import COMPARISON_SCHEMA_VERSION, SCHEMA_VERSION, parse_threads, run_bench

__all__ = ["COMPARISON_SCHEMA_VERSION", "SCHEMA_VERSION", "parse_threads", "run_bench"]
