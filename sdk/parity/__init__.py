"""Parity: a build run by its real runtime next to python_ref, per graph, per host step and per task, against
the named tolerances of `minivlm.converters.tolerances` (docs/ARCHITECTURE.md §8; the method is `run`'s docstring).

One module per job: `images` (the photos and scenes it runs on), `reference` (the reference run, graph calls
recorded), `statistics` (error statistics), `checks` (report rows, per-graph, Core ML spec and fp16 range checks),
`tasks` (host steps and tasks, detections paired by IoU), `weight_audit` (every stored constant traced to its
reference tensor; readers `stored_constants` for TFLite and `executorch_constants`, the reference side
`reference_constants`), `efficientvlm_run` and `efficientvlm_tasks` (the same
for an EfficientVLM model), `goldens` (the reference must reproduce the build's goldens), `report` (table and
JSON), `run` (`check_parity`, `run_parity`: `minivlm parity`).
`coreai_layers` (per-layer comparison of a Core AI asset, pairing in `coreai_op_map`) needs the `coreai` extra
and is imported by name only.
"""

from .checks import Check, judged
from .goldens import check_goldens
from .images import ALL_PHOTOS, DEFAULT_PHOTOS, DEFAULT_SCENES, SWEEP_SCENES, ParityImage, parity_images
from .reference import ImageRun, ReferenceRun, run_image, run_reference
from .report import REPORT_FILE, ParityReport, write_report
from .run import check_parity, reference_for, run_parity
from .statistics import ErrorStats
from .tasks import match_detections

__all__ = [
    "ALL_PHOTOS",
    "DEFAULT_PHOTOS",
    "DEFAULT_SCENES",
    "REPORT_FILE",
    "SWEEP_SCENES",
    "Check",
    "ErrorStats",
    "ImageRun",
    "ParityImage",
    "ParityReport",
    "ReferenceRun",
    "check_goldens",
    "check_parity",
    "judged",
    "match_detections",
    "parity_images",
    "reference_for",
    "run_image",
    "run_parity",
    "run_reference",
    "write_report",
]
