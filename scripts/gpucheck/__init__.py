"""The pieces of scripts/gpu_check.py (issue 17): the device check run by `make gpu-check`.

probe    is there a CUDA GPU (stdlib, and torch if importable)
budget   timestamps, per-stage subprocesses cut at their time budget, measurement records
report   the JSON file and the markdown summary, and the arithmetic they derive
stages   what each stage measures (runs inside the stage's subprocess)
"""
