from django.core.management.base import BaseCommand, CommandError

from feedback.services.rollups import RollupRefresh, rollups_rebuild


class Command(BaseCommand):
    help = (
        "Recompute the dashboards' daily rollups of every logged day from the interactions, "
        "ratings and reviews (the old figures stay readable until each day is replaced)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--days-per-batch",
            type=int,
            default=7,
            help="days recomputed per transaction (default 7)",
        )

    def handle(self, *args, days_per_batch: int, **options) -> None:
        if days_per_batch < 1:
            raise CommandError("--days-per-batch must be at least 1.")

        def report(done: RollupRefresh) -> None:
            self.stdout.write(f"{done.buckets} project-days recomputed")

        outcome = rollups_rebuild(days_per_batch=days_per_batch, progress=report)
        self.stdout.write(self.style.SUCCESS(f"Rebuilt: {outcome.buckets} project-days."))
