"""The benchmark suite of agent-runs: `uv run python -m bench` (see `bench/__main__.py`).

Modules: `procs` starts and stops the processes (the service, PostgreSQL, the fake model),
`fake` is the fake model, `load` drives open-loop load, `cpu` reads the processes' CPU time,
`report` prints the table and writes the JSON, and `workloads` holds one module per workload.
"""
