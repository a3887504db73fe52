"""How fast a training job goes: steps (and tokens) per second of the current attempt, which
the job page shows beside the progress bar with the time left."""

import time


class StepPace:
    """Measures from the first step it sees, so that loading the model (or the steps a resumed
    attempt skipped) do not count."""

    def __init__(self) -> None:
        self._first: tuple[float, int, int | None] | None = None

    def observe(self, *, step: int, total: int, tokens: int | None = None) -> dict:
        """The pace so far as the job records it in its metrics (empty at the first step)."""
        now = time.monotonic()
        if self._first is None:
            self._first = (now, step, tokens)
            return {}
        started, first_step, first_tokens = self._first
        elapsed = max(now - started, 1e-9)
        steps_per_second = (step - first_step) / elapsed
        pace = {
            "steps_per_second": round(steps_per_second, 4),
            "seconds_left": round((total - step) / steps_per_second) if steps_per_second else None,
        }
        if tokens is not None and first_tokens is not None:
            pace["tokens_per_second"] = round((tokens - first_tokens) / elapsed, 1)
        return pace
