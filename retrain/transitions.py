"""The domain error of every state transition the retrain layer refuses: promotion without
evidence, a rollback with nothing before, activating an index still being built, a second
re-curation while one runs. API, dashboard, admin and commands translate it; they never
re-check the rules themselves."""


class TransitionRefused(Exception):
    """A transition the rules do not allow now. `code` names the rule (the API's error code);
    the message says why, for a person."""

    code = "transition_refused"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class NothingToRollBack(TransitionRefused):
    """No earlier version to go back to."""

    code = "nothing_to_restore"


class JobAlreadyUnfinished(TransitionRefused):
    """A job of a kind that runs once at a time per project is already queued or running."""

    code = "job_already_running"
