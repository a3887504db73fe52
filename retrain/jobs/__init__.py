"""Long-running work as jobs: their lifecycle (create, claim, heartbeat, cancel, reap), their
parameters, the schedules that start them, and the registry of job kinds. What each kind does
lives with its step: `datasets.job`, `index_refresh.job`, `training.job`, `evaluation.job`."""
