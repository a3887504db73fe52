"""The closed-loop benchmark: does feedback make the answers better?

`loop_benchmark_run` ingests a corpus into a new project and runs the loop on it with
simulated users, an oracle and reviewers, measuring every stage; `python -m bench.loop`
(`make flywheel-bench`) runs it on a private database, Redis database and workers of its own,
and the test suite on its test database and worker.
"""
