"""A reviewer works the queue in a real browser with the keyboard alone."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from feedback.models import Review
from feedback.services.ratings import rating_submit
from flywheel.models import Interaction
from tests.conftest import user_with_role
from tests.factories import ProjectFactory


def _complaint(project, question: str, *, age_minutes: int) -> Interaction:
    interaction = Interaction.objects.create(
        project=project,
        source=Interaction.Source.LOG,
        messages=[{"role": "user", "content": question}],
        query_text=question,
        response=f"A weak answer to: {question}",
        created_at=timezone.now() - timedelta(minutes=age_minutes),
    )
    rating_submit(interaction=interaction, rater_id="end-user", source="widget", thumb="down")
    return interaction


@pytest.mark.django_db(transaction=True)
def test_a_reviewer_approves_rejects_and_corrects_with_the_keyboard_only(live_server, page):
    project = ProjectFactory()
    reviewer = user_with_role(project, "reviewer", "kim")
    to_approve = _complaint(project, "How do I export my data?", age_minutes=3)
    to_reject = _complaint(project, "Can I pay by cheque?", age_minutes=2)
    to_correct = _complaint(project, "Where are my invoices?", age_minutes=1)
    queue_path = reverse("dashboard:queue", kwargs={"project_slug": project.slug})

    page.goto(f"{live_server.url}{reverse('login')}?next={queue_path}")
    page.get_by_label("Username").press_sequentially("kim")
    page.get_by_label("Password").press_sequentially("pw-kim")
    page.keyboard.press("Enter")

    heading = page.locator("#queue-item-heading")
    expect(heading).to_have_text("How do I export my data?")
    expect(heading).to_be_focused()

    page.keyboard.press("?")
    expect(page.locator("#queue-shortcuts dl")).to_be_visible()
    page.keyboard.press("?")
    expect(page.locator("#queue-shortcuts dl")).to_be_hidden()

    page.keyboard.press("a")
    expect(heading).to_have_text("Can I pay by cheque?")
    expect(heading).to_be_focused()

    page.keyboard.press("r")
    expect(heading).to_have_text("Where are my invoices?")
    expect(heading).to_be_focused()

    page.keyboard.press("e")
    editor = page.get_by_label("Ideal answer")
    expect(editor).to_be_focused()
    # Letters typed in the editor are text, not shortcuts: "a", "r" and "s" must not act.
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("Open Billing, then Invoices; each one has a PDF.")
    page.keyboard.press("Control+Enter")

    empty = page.get_by_role("heading", name="The queue is empty")
    expect(empty).to_be_visible()
    expect(empty).to_be_focused()
    expect(page.locator('[data-stat="reviewed-today"]')).to_have_text("3")

    reviews = {
        review.interaction_id: (review.decision, review.ideal_answer)
        for review in Review.objects.filter(reviewer=reviewer)
    }
    assert reviews == {
        to_approve.pk: ("approved", ""),
        to_reject.pk: ("rejected", ""),
        to_correct.pk: ("corrected", "Open Billing, then Invoices; each one has a PDF."),
    }
