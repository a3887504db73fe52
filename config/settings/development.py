"""Local settings: the default for `manage.py`, `make run` and the test suite's base.

Without DATABASE_URL the embedded PostgreSQL (with pgvector) under var/ is started on demand;
without SECRET_KEY one is generated once and kept under var/.
"""

import secrets
import warnings

from config.settings.base import *  # noqa: F403
from config.settings.base import VAR_DIR
from config.settings.database import database_config_from_url, embedded_database_url
from config.settings.environment import env_str


def _secret_key_kept_under_var() -> str:
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = env_str("SECRET_KEY") or _secret_key_kept_under_var()

DATABASES = {
    "default": database_config_from_url(
        env_str("DATABASE_URL") or embedded_database_url(VAR_DIR / "postgres")
    )
}

# `manage.py runserver` serves the apps' static files as they are, with or without DEBUG and
# before any `collectstatic`; until one has run, WhiteNoise's warning about the missing
# STATIC_ROOT says nothing useful.
WHITENOISE_USE_FINDERS = True
warnings.filterwarnings("ignore", message="No directory at: ", category=UserWarning)
