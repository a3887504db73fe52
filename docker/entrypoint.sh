#!/bin/sh
# Roles of the one image. Every role reads its configuration from the environment.
set -e
role="${1:-web}"
shift || true
celery="python -m celery -A config"

case "$role" in
  migrate)
    exec python manage.py migrate --noinput ;;
  web)
    export FLYWHEEL_TORCH_THREADS="${FLYWHEEL_TORCH_THREADS:-1}"
    exec python -m gunicorn config.wsgi:application --bind 0.0.0.0:8000 \
      --worker-class gthread --workers "${WEB_WORKERS:-2}" --threads "${WEB_THREADS:-4}" \
      --timeout 120 --access-logfile - "$@" ;;
  worker)
    export FLYWHEEL_TORCH_THREADS="${FLYWHEEL_TORCH_THREADS:-1}"
    exec $celery worker --loglevel INFO --hostname "general@%h" \
      --queues default,curation,index --concurrency "${WORKER_CONCURRENCY:-2}" "$@" ;;
  training-worker)
    # One job at a time: a LoRA run takes the whole machine (or GPU), every core included.
    export FLYWHEEL_TORCH_THREADS="${FLYWHEEL_TORCH_THREADS:-0}"
    exec $celery worker --loglevel INFO --hostname "training@%h" \
      --queues training --concurrency 1 --prefetch-multiplier 1 "$@" ;;
  beat)
    exec $celery beat --loglevel INFO \
      --scheduler django_celery_beat.schedulers:DatabaseScheduler "$@" ;;
  manage)
    exec python manage.py "$@" ;;
  *)
    echo "unknown role '$role': use migrate, web, worker, training-worker, beat or manage" >&2
    exit 64 ;;
esac
