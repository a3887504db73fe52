"""A conversation: the interactions that share a `session_id`, oldest first, each with its
feedback — the session view Langfuse and Phoenix users know."""

from collections.abc import Sequence
from dataclasses import dataclass

from django.db.models import Avg, Count, Q

from feedback.models import Thumb
from flywheel.models import Interaction, Project

# A conversation longer than this is shown from its start, with a note saying how many more
# turns it has: a page of thousands of turns helps nobody read it.
SESSION_TURNS_SHOWN = 200


@dataclass(frozen=True)
class Session:
    session_id: str
    turns: Sequence[Interaction]
    total_turns: int

    @property
    def more_turns(self) -> int:
        return self.total_turns - len(self.turns)


def session_get(*, project: Project, session_id: str) -> Session | None:
    """The project's interactions in the session, in the order they happened; None when the
    session has none."""
    interactions = Interaction.objects.filter(project=project, session_id=session_id)
    total = interactions.count()
    if not total:
        return None
    turns = list(
        interactions.select_related("model_version", "index_version")
        .defer("query_embedding")
        .annotate(
            thumbs_up=Count("ratings", filter=Q(ratings__thumb=Thumb.UP)),
            thumbs_down=Count("ratings", filter=Q(ratings__thumb=Thumb.DOWN)),
            mean_score=Avg("ratings__score"),
            rating_corrections=Count("ratings", filter=Q(ratings__correction__gt="")),
        )
        .order_by("created_at", "pk")[:SESSION_TURNS_SHOWN]
    )
    return Session(session_id=session_id, turns=turns, total_turns=total)
