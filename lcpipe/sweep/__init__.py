"""`lcpipe sweep`: one base pipeline, many override points, each an ordinary cached pipeline run.

A sweep file::

    base: v1_int8.yaml                  # relative to the sweep file
    grid: {model.arch: [PPLCNet_x0_25, PPLCNet_x0_5], stages.quantize.preset: [performance, mixed]}
    points: []                          # explicit override dicts, run after the grid points
    set: {data.eval.count: 200}         # applied to every point
    out: ../runs/sweeps/scales          # relative to the sweep file [runs/sweeps/<name>]
    retries: 1                          # Ray: reruns of a point whose worker or node died
    storage: file:///shared/lcpipe      # Ray: where big inputs, run dirs and the stage cache meet [none]

Points run as Ray tasks (local Ray by default, a cluster with ``address``/``RAY_ADDRESS``) or
sequentially in-process (``local=True``). On Ray the inputs travel with the job and each point's run
dir comes home under ``<out>/points/`` whichever node ran it (shipping.py); every row names its
node and CPU kind, and ``per_cpu_kind`` re-times each latency point on every CPU kind (fleet.py).
A failing point is recorded and the others go on; running the sweep again resumes from what came
home and from each node's stage cache. Results: ``sweep.json``, ``sweep.csv``, ``sweep.html``.

Modules: schema (the sweep file), point (one run -> one row), execute (local / Ray loop), on_ray
(Ray tasks, resume, crashes), shipping + storage (what travels), nodes (CPU kinds, re-timing),
results + fleet (sweep.json, CSV). The tables, Pareto fronts and sweep.html: lcpipe.render.sweep.
"""

from lcpipe.sweep.execute import SweepFailedError, SweepResult, run_sweep
from lcpipe.sweep.point import PointTask, collect_metrics, metrics_columns, run_point
from lcpipe.sweep.results import write_results
from lcpipe.sweep.schema import Sweep, SweepPoint, SweepSpec, load_sweep, measures_latency

__all__ = ["PointTask", "Sweep", "SweepFailedError", "SweepPoint", "SweepResult", "SweepSpec", "collect_metrics",
           "load_sweep", "measures_latency", "metrics_columns", "run_point", "run_sweep", "write_results"]
