"""The summary `make run` (and `bootstrap_demo`) print for a newcomer: where to go, how to
sign in, the keys, where the logs are."""

from flywheel.services.projects import DemoBootstrapResult

ADMIN_USERNAME = "admin"


def welcome_lines(*, outcome: DemoBootstrapResult, base_url: str) -> list[str]:
    """What a newcomer needs to start: where to go, how to sign in, the keys, where logs are.
    The password and keys exist in the clear only on the start that created them."""
    password = (
        f"password {outcome.admin_password}"
        if outcome.admin_password
        else "the password set on the first start "
        f"(new one: .venv/bin/python manage.py changepassword {ADMIN_USERNAME})"
    )
    earlier = "created on the first start; make another on the dashboard's API keys page"
    lines = [
        "  Flywheel is running.",
        "",
        f"  Dashboard   {base_url}dashboard/{outcome.project.slug}/",
        f"  Sign in     {ADMIN_USERNAME}, {password}",
        f"  Admin       {base_url}admin/      API docs  {base_url}api/docs",
        f"  App key     {outcome.app_key or earlier}",
        "              (chat, log, read, rate: what an app that serves and logs needs)",
        f"  Admin key   {outcome.admin_key or earlier}",
        "              (every scope: datasets, jobs and versions too; keep it off apps)",
        "  Logs        this terminal: web requests and the workers' tasks, as they happen",
        "              (LOG_FORMAT=json for one JSON object per line)",
    ]
    if outcome.app_key:
        lines += [
            "",
            f"  Try it      curl -s {base_url}v1/chat/completions \\",
            f"                -H 'Authorization: Bearer {outcome.app_key}' \\",
            "                -H 'Content-Type: application/json' \\",
            """                -d '{"messages": [{"role": "user", "content": "What does """
            """Canopy cost?"}]}'""",
        ]
    return lines
