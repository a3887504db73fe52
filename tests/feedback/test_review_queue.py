"""The annotation queue: its order, its leases under concurrency, and the pages reviewers use."""

import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from feedback.models import Rating, Review, ReviewLease
from feedback.services.ratings import rating_submit
from feedback.services.review_queue import review_queue_candidates, review_queue_next
from feedback.services.reviews import ReviewLeaseLost, review_submit, review_submit_leased
from flywheel.models import Interaction
from tests.conftest import user_with_role
from tests.factories import ProjectFactory

HTMX = {"HTTP_HX_REQUEST": "true"}


def _interaction(project, question: str, *, answer: str = "", age_minutes: int = 0, **fields):
    """An interaction asked `age_minutes` ago (older ones come first within a priority)."""
    values = {
        "project": project,
        "source": Interaction.Source.LOG,
        "messages": [{"role": "user", "content": question}],
        "query_text": question,
        "response": answer or f"Answer to {question}",
        "created_at": timezone.now() - timedelta(minutes=age_minutes),
    }
    return Interaction.objects.create(**(values | fields))


def _rate(interaction, rater_id: str = "end-user-1", **fields):
    return rating_submit(interaction=interaction, rater_id=rater_id, source="api", **fields)


def _negative(project, question: str = "Why is my sync failing?", **fields):
    interaction = _interaction(project, question, **fields)
    _rate(interaction, thumb="down")
    return interaction


@pytest.fixture
def sample_everything(settings):
    settings.FLYWHEEL_REVIEW_SAMPLE_PERCENT = 100


@pytest.fixture
def sample_nothing(settings):
    settings.FLYWHEEL_REVIEW_SAMPLE_PERCENT = 0


@pytest.fixture
def reviewer(project):
    return user_with_role(project, "reviewer")


def _queue_url(project) -> str:
    return reverse("dashboard:queue", kwargs={"project_slug": project.slug})


def _review_url(project, interaction) -> str:
    return reverse(
        "dashboard:queue_review",
        kwargs={"project_slug": project.slug, "interaction_id": interaction.pk},
    )


def _skip_url(project, interaction) -> str:
    return reverse(
        "dashboard:queue_skip",
        kwargs={"project_slug": project.slug, "interaction_id": interaction.pk},
    )


def _logged_in(client, user):
    client.force_login(user)
    return client


def _shown_item(response) -> Interaction | None:
    item = response.context["item"]
    return item.interaction if item else None


# --- Order ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_complaints_come_first_then_low_scores_then_the_sampled_rest(
    project, reviewer, sample_everything
):
    sampled_old = _interaction(project, "unrated, oldest", age_minutes=60)
    liked = _interaction(project, "thumbs up, score 5", age_minutes=50)
    _rate(liked, thumb="up", score=5)
    middling = _interaction(project, "score 3", age_minutes=40)
    _rate(middling, score=3)
    scored_two = _interaction(project, "score 2", age_minutes=30)
    _rate(scored_two, score=2)
    scored_one = _interaction(project, "score 1", age_minutes=35)
    _rate(scored_one, score=1)
    corrected = _interaction(project, "correction, no thumb", age_minutes=20)
    _rate(corrected, correction="The right answer.")
    thumbs_down = _interaction(project, "thumbs down", age_minutes=25)
    _rate(thumbs_down, thumb="down", score=4)

    queued = list(review_queue_candidates(project=project, reviewer=reviewer))

    assert queued == [thumbs_down, corrected, scored_one, scored_two, sampled_old, liked, middling]


@pytest.mark.django_db
def test_unrated_and_well_rated_items_outside_the_sample_are_never_queued(
    project, reviewer, sample_nothing
):
    _interaction(project, "unrated")
    liked = _interaction(project, "liked")
    _rate(liked, thumb="up", score=4)
    complaint = _negative(project)
    low = _interaction(project, "low")
    _rate(low, score=2)

    queued = list(review_queue_candidates(project=project, reviewer=reviewer))

    assert queued == [complaint, low]


@pytest.mark.django_db
def test_reviewed_items_and_other_projects_items_are_not_queued(project, reviewer):
    reviewed = _negative(project, "reviewed")
    review_submit(interaction=reviewed, reviewer=reviewer, decision="approved")
    _negative(ProjectFactory(), "elsewhere")
    waiting = _negative(project, "waiting")

    assert list(review_queue_candidates(project=project, reviewer=reviewer)) == [waiting]


# --- Leases -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_second_reviewer_gets_a_different_item_and_the_first_keeps_theirs(project):
    first, second = _negative(project, "first", age_minutes=2), _negative(project, "second")
    alice = user_with_role(project, "reviewer", "alice")
    bob = user_with_role(project, "reviewer", "bob")

    assert review_queue_next(project=project, reviewer=alice) == first
    assert review_queue_next(project=project, reviewer=bob) == second
    assert review_queue_next(project=project, reviewer=alice) == first
    assert review_queue_next(project=project, reviewer=user_with_role(project, "admin")) is None


@pytest.mark.django_db(transaction=True)
def test_reviewers_asking_at_the_same_instant_never_get_the_same_item():
    project = ProjectFactory()
    items = [_negative(project, f"question {n}", age_minutes=n) for n in range(8)]
    reviewers = [user_with_role(project, "reviewer", f"reviewer-{n}") for n in range(4)]
    start_together = threading.Barrier(len(reviewers))
    handed_out: dict[str, object] = {}
    failures: list[BaseException] = []

    def work_the_queue(reviewer):
        try:
            start_together.wait(timeout=10)
            item = review_queue_next(project=project, reviewer=reviewer)
            handed_out[reviewer.username] = item.pk if item else None
        except BaseException as error:  # reported by the test thread below
            failures.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=work_the_queue, args=(r,)) for r in reviewers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert not failures
    got = list(handed_out.values())
    assert len(got) == len(reviewers)
    assert None not in got
    assert len(set(got)) == len(reviewers), f"an item went to two reviewers: {handed_out}"
    assert set(got) <= {item.pk for item in items}
    leases = dict(ReviewLease.objects.values_list("reviewer__username", "interaction_id"))
    assert leases == handed_out


@pytest.mark.django_db(transaction=True)
def test_reviewers_draining_the_queue_together_get_and_review_each_item_once():
    # Sustained contention: a lease committed while another reviewer's candidate query is
    # running is invisible to that query's snapshot. Before review_queue_next looked again
    # under the row lock, most runs of this test handed an item or two to two reviewers.
    project = ProjectFactory()
    items = Interaction.objects.bulk_create(
        Interaction(
            project=project,
            source=Interaction.Source.LOG,
            query_text=f"q{n}",
            response="a",
            created_at=timezone.now(),
        )
        for n in range(60)
    )
    Rating.objects.bulk_create(
        Rating(interaction=item, rater_id="end-user", source="api", thumb="down") for item in items
    )
    reviewers = [user_with_role(project, "reviewer", f"reviewer-{n}") for n in range(8)]
    start_together = threading.Barrier(len(reviewers))
    handed_out: list[tuple[str, object]] = []
    failures: list[BaseException] = []

    def drain_the_queue(reviewer):
        try:
            start_together.wait(timeout=10)
            while item := review_queue_next(project=project, reviewer=reviewer):
                handed_out.append((reviewer.username, item.pk))
                review_submit_leased(interaction=item, reviewer=reviewer, decision="approved")
        except BaseException as error:  # reported by the test thread below
            failures.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=drain_the_queue, args=(r,)) for r in reviewers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not failures
    times_handed_out = Counter(pk for _, pk in handed_out)
    assert [pk for pk, times in times_handed_out.items() if times > 1] == []
    assert set(times_handed_out) == {item.pk for item in items}
    assert Review.objects.count() == len(items)


@pytest.mark.django_db
def test_an_expired_lease_goes_to_the_next_reviewer_and_the_first_can_no_longer_decide(
    project,
):
    item = _negative(project)
    alice = user_with_role(project, "reviewer", "alice")
    bob = user_with_role(project, "reviewer", "bob")
    assert review_queue_next(project=project, reviewer=alice) == item
    assert review_queue_next(project=project, reviewer=bob) is None

    ReviewLease.objects.filter(interaction=item).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )

    assert review_queue_next(project=project, reviewer=bob) == item
    assert ReviewLease.objects.get(interaction=item).reviewer == bob
    with pytest.raises(ReviewLeaseLost) as lost:
        review_submit_leased(interaction=item, reviewer=alice, decision="approved")
    assert not lost.value.already_reviewed
    assert not Review.objects.exists()


@pytest.mark.django_db
def test_an_expired_lease_nobody_took_still_lets_its_reviewer_decide(project):
    item = _negative(project)
    alice = user_with_role(project, "reviewer", "alice")
    review_queue_next(project=project, reviewer=alice)
    ReviewLease.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    review_submit_leased(interaction=item, reviewer=alice, decision="approved")

    assert Review.objects.get().reviewer == alice
    assert not ReviewLease.objects.exists()


# --- The page and its actions -----------------------------------------------------------------


@pytest.mark.django_db
def test_the_page_shows_the_conversation_answer_passages_ratings_and_why_it_is_queued(
    client, project, reviewer
):
    item = _interaction(
        project,
        "How do I reset my password?",
        answer="Click 'Forgot password'.",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "How do I reset my password?"},
        ],
        retrieved=[
            {
                "title": "Account help",
                "heading": "Passwords",
                "score": 0.8731,
                "text": "Use the reset link on the sign-in page.",
                "rank": 1,
            },
        ],
    )
    _rate(item, thumb="down", score=2, comment="Too vague", correction="Open Settings > Reset.")

    page = _logged_in(client, reviewer).get(_queue_url(project))

    assert page.status_code == 200
    html = page.content.decode()
    for shown in [
        "How do I reset my password?",
        "Be brief.",
        "Click &#x27;Forgot password&#x27;.",
        "Account help",
        "Passwords",
        "0.873",
        "Use the reset link on the sign-in page.",
        "Too vague",
        "Open Settings &gt; Reset.",
        "2/5",
        "thumbs-down or suggested a correction",
    ]:
        assert shown in html, shown
    # The editor starts from the end user's correction.
    assert page.context["form"]["ideal_answer"].value() == "Open Settings > Reset."
    assert ReviewLease.objects.get(interaction=item).reviewer == reviewer


@pytest.mark.django_db
def test_the_reason_names_a_low_score_or_the_sample(client, project, reviewer, sample_everything):
    low = _interaction(project, "low", age_minutes=1)
    _rate(low, score=1)
    sampled = _interaction(project, "sampled")
    client = _logged_in(client, reviewer)

    assert "scored it 2 out of 5 or lower" in client.get(_queue_url(project)).content.decode()
    client.post(_skip_url(project, low))
    page = client.get(_queue_url(project))
    assert _shown_item(page) == sampled
    assert "random sample" in page.content.decode()
    # No correction was suggested: the editor starts from the model's answer.
    assert page.context["form"]["ideal_answer"].value() == "Answer to sampled"


@pytest.mark.django_db
def test_user_text_is_shown_as_text_never_as_markup(client, project, reviewer):
    attack = "<script>alert(1)</script>"
    item = _interaction(
        project,
        f"Q {attack}",
        answer=f"A {attack}",
        retrieved=[{"title": attack, "text": attack, "score": 0.5}],
    )
    _rate(item, thumb="down", comment=attack, correction=f"C {attack}")

    html = _logged_in(client, reviewer).get(_queue_url(project)).content.decode()

    assert "<script>alert(1)" not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 6


@pytest.mark.parametrize(
    ("fields", "decision", "ideal_answer"),
    [
        ({"decision": "approved"}, "approved", ""),
        ({"decision": "rejected"}, "rejected", ""),
        (
            {"decision": "corrected", "ideal_answer": "  The ideal answer.  "},
            "corrected",
            "The ideal answer.",
        ),
    ],
)
@pytest.mark.parametrize("with_htmx", [True, False], ids=["htmx", "plain-form"])
@pytest.mark.django_db
def test_a_decision_is_stored_and_the_next_item_follows(
    client, project, reviewer, fields, decision, ideal_answer, with_htmx
):
    first, second = _negative(project, "first", age_minutes=1), _negative(project, "second")
    client = _logged_in(client, reviewer)
    assert _shown_item(client.get(_queue_url(project))) == first

    response = client.post(_review_url(project, first), fields, **(HTMX if with_htmx else {}))

    review = Review.objects.get()
    assert (review.interaction, review.reviewer) == (first, reviewer)
    assert (review.decision, review.ideal_answer) == (decision, ideal_answer)
    if with_htmx:
        assert response.status_code == 200
        assert response.templates[0].name == "dashboard/partials/queue_workspace.html"
        assert _shown_item(response) == second
        assert response.context["notice"].text.endswith("“first”.")
    else:
        assert response.status_code == 302
        assert response.url == _queue_url(project)
        page = client.get(response.url)
        assert _shown_item(page) == second
        assert "“first”" in page.content.decode()
    assert ReviewLease.objects.get().interaction == second


@pytest.mark.parametrize("with_htmx", [True, False], ids=["htmx", "plain-form"])
@pytest.mark.django_db
def test_an_empty_ideal_answer_is_refused_with_a_form_error_and_nothing_is_stored(
    client, project, reviewer, with_htmx
):
    item = _negative(project)
    client = _logged_in(client, reviewer)
    client.get(_queue_url(project))

    response = client.post(
        _review_url(project, item),
        {"decision": "corrected", "ideal_answer": "   \n "},
        **(HTMX if with_htmx else {}),
    )

    assert response.status_code == 422
    assert "Write the ideal answer before saving it." in response.content.decode()
    assert _shown_item(response) == item
    assert not Review.objects.exists()
    assert ReviewLease.objects.get().reviewer == reviewer


@pytest.mark.django_db
def test_an_unknown_decision_is_a_bad_request(client, project, reviewer):
    item = _negative(project)
    client = _logged_in(client, reviewer)
    client.get(_queue_url(project))

    assert client.post(_review_url(project, item), {"decision": "maybe"}).status_code == 400
    assert not Review.objects.exists()


@pytest.mark.django_db
def test_skipping_passes_over_an_item_for_this_session_and_hands_it_back(client, project, reviewer):
    first, second = _negative(project, "first", age_minutes=1), _negative(project, "second")
    client = _logged_in(client, reviewer)
    client.get(_queue_url(project))

    response = client.post(_skip_url(project, first), **HTMX)

    assert _shown_item(response) == second
    assert not ReviewLease.objects.filter(interaction=first).exists()
    # Another reviewer can take the skipped item at once.
    other = user_with_role(project, "reviewer", "other")
    assert review_queue_next(project=project, reviewer=other) == first
    assert _shown_item(client.get(_queue_url(project))) == second

    client.post(_skip_url(project, second))
    emptied = client.get(_queue_url(project))
    assert _shown_item(emptied) is None
    assert "Nothing left but the items you skipped" in emptied.content.decode()

    ReviewLease.objects.filter(reviewer=other).delete()
    reset = reverse("dashboard:queue_skipped_reset", kwargs={"project_slug": project.slug})
    assert _shown_item(client.post(reset, **HTMX)) == first
    assert not Review.objects.exists()


@pytest.mark.django_db
def test_the_empty_queue_says_so(client, project, reviewer, sample_nothing):
    _interaction(project, "nobody complained")

    page = _logged_in(client, reviewer).get(_queue_url(project))

    assert _shown_item(page) is None
    assert "The queue is empty" in page.content.decode()


@pytest.mark.parametrize("with_htmx", [True, False], ids=["htmx", "plain-form"])
@pytest.mark.django_db
def test_a_decision_on_an_item_someone_else_reviewed_is_not_stored_twice(
    client, project, with_htmx
):
    item, following = _negative(project, "taken", age_minutes=1), _negative(project, "following")
    alice = user_with_role(project, "reviewer", "alice")
    bob = user_with_role(project, "reviewer", "bob")
    client = _logged_in(client, alice)
    assert _shown_item(client.get(_queue_url(project))) == item
    # Alice's lease runs out; Bob gets the item and decides first.
    ReviewLease.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert review_queue_next(project=project, reviewer=bob) == item
    review_submit_leased(interaction=item, reviewer=bob, decision="rejected")

    response = client.post(
        _review_url(project, item), {"decision": "approved"}, **(HTMX if with_htmx else {})
    )

    if with_htmx:
        assert response.status_code == 409
        page = response
    else:
        assert response.status_code == 302
        page = client.get(response.url)
    assert "already been reviewed, so your decision was not saved" in page.content.decode()
    assert _shown_item(page) == following
    assert list(Review.objects.values_list("reviewer__username", "decision")) == [
        ("bob", "rejected")
    ]


@pytest.mark.django_db
def test_a_repeated_decision_is_stored_once(client, project, reviewer):
    item = _negative(project)
    client = _logged_in(client, reviewer)
    client.get(_queue_url(project))

    client.post(_review_url(project, item), {"decision": "approved"}, **HTMX)
    repeated = client.post(_review_url(project, item), {"decision": "approved"}, **HTMX)

    assert repeated.status_code == 409
    assert Review.objects.count() == 1


@pytest.mark.django_db
def test_a_decision_on_an_item_leased_to_someone_else_is_refused(client, project, reviewer):
    item = _negative(project)
    review_queue_next(project=project, reviewer=user_with_role(project, "reviewer", "holder"))

    response = _logged_in(client, reviewer).post(
        _review_url(project, item), {"decision": "approved"}, **HTMX
    )

    assert response.status_code == 409
    assert "another reviewer has it now" in response.content.decode()
    assert not Review.objects.exists()


# --- Who may use it ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["reviewer", "admin"])
@pytest.mark.django_db
def test_reviewers_and_admins_work_the_queue(client, project, role):
    item = _negative(project)
    client = _logged_in(client, user_with_role(project, role))

    assert client.get(_queue_url(project)).status_code == 200
    assert client.post(_review_url(project, item), {"decision": "approved"}).status_code == 302
    assert Review.objects.get().decision == "approved"


@pytest.mark.django_db
def test_viewers_are_refused_outsiders_see_nothing_and_strangers_must_sign_in(client, project):
    item = _negative(project)

    viewer = _logged_in(client, user_with_role(project, "viewer"))
    assert viewer.get(_queue_url(project)).status_code == 403
    assert viewer.post(_review_url(project, item), {"decision": "approved"}).status_code == 403
    assert viewer.post(_skip_url(project, item)).status_code == 403

    outsider = _logged_in(client, user_with_role(ProjectFactory(), "admin", "outsider"))
    assert outsider.get(_queue_url(project)).status_code == 404
    assert outsider.post(_review_url(project, item), {"decision": "approved"}).status_code == 404

    client.logout()
    anonymous = client.get(_queue_url(project))
    assert anonymous.status_code == 302
    assert anonymous.url.startswith(reverse("login"))
    assert client.post(_review_url(project, item), {"decision": "approved"}).status_code == 302
    assert not Review.objects.exists()
    assert not ReviewLease.objects.exists()


@pytest.mark.django_db
def test_an_interaction_of_another_project_is_not_found(client, project, reviewer):
    elsewhere = _negative(ProjectFactory())

    response = _logged_in(client, reviewer).post(
        _review_url(project, elsewhere), {"decision": "approved"}
    )

    assert response.status_code == 404


# --- Progress ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_progress_counts_today_and_total_per_reviewer_and_what_is_left(client, project):
    alice = user_with_role(project, "reviewer", "alice")
    bob = user_with_role(project, "admin", "bob")
    user_with_role(project, "reviewer", "carol")
    user_with_role(project, "viewer", "vic")
    done = [_negative(project, f"done {n}") for n in range(4)]
    review_submit(interaction=done[0], reviewer=alice, decision="approved")
    review_submit(interaction=done[1], reviewer=alice, decision="rejected")
    yesterday = review_submit(interaction=done[2], reviewer=alice, decision="approved")
    Review.objects.filter(pk=yesterday.pk).update(created_at=timezone.now() - timedelta(days=1))
    review_submit(interaction=done[3], reviewer=bob, decision="approved")
    leased_to_bob = _negative(project, "leased to bob", age_minutes=5)
    assert review_queue_next(project=project, reviewer=bob) == leased_to_bob
    _negative(project, "waiting 1")
    _negative(project, "waiting 2")
    _negative(ProjectFactory(), "another project's")

    page = _logged_in(client, alice).get(_queue_url(project))

    progress = page.context["progress"]
    # Left: the two waiting items, one of them now on Alice's screen; Bob's is his to finish.
    assert (progress.reviewed_today, progress.reviewed_total) == (2, 3)
    assert progress.items_left == 2
    table = [(row.username, row.reviewed_today, row.reviewed_total) for row in progress.reviewers]
    assert table == [("alice", 2, 3), ("bob", 1, 1), ("carol", 0, 0)]
    html = page.content.decode()
    assert 'data-stat="reviewed-today">2<' in html
    assert 'data-stat="items-left">2<' in html
