"""Sweeps: grids of settings x seeds, run locally or through submitit, aggregated."""
