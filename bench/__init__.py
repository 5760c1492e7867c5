"""nunet's performance suite: every figure a ratio against a baseline measured in the same run.

Run `python -m bench PREFIX...` or `python -m bench --all --out bench/results/latest.json`;
see bench/README.md. Each `bench/bench_*.py` module declares `METRICS` and yields `Metric`s from
`run(ctx)` (bench/_harness.py).
"""
