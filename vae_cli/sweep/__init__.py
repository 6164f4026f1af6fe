"""Sweeps: grids of settings x seeds, run locally or through submitit, aggregated."""

# Here, not in run.py, so that the CLI can list them in --help without importing a sweep's code.
LAUNCHERS = ("local", "slurm", "submitit-local")
