"""A reviewer revises their review from the interaction page in a real browser, and sees the
history with what changed."""

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from feedback.models import Review
from feedback.services.reviews import review_submit
from tests.conftest import user_with_role
from tests.factories import ProjectFactory, served


@pytest.mark.django_db(transaction=True)
def test_a_reviewer_revises_their_review_from_the_interaction_page(live_server, page):
    project = ProjectFactory()
    reviewer = user_with_role(project, "reviewer", "kim")
    interaction = served(project, "Where are my invoices?")
    review = review_submit(
        interaction=interaction,
        reviewer=reviewer,
        decision=Review.Decision.CORRECTED,
        ideal_answer="Open Billing; each invoice has a PDF.",
    )
    detail_path = reverse(
        "dashboard:interaction_detail",
        kwargs={"project_slug": project.slug, "interaction_id": interaction.pk},
    )
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))

    page.goto(f"{live_server.url}{reverse('login')}?next={detail_path}")
    page.get_by_label("Username").fill("kim")
    page.get_by_label("Password").fill("pw-kim")
    page.get_by_role("button", name="Sign in").click()

    page.get_by_text("Revise this review").click()
    # Saving the same verdict is refused beside the form, and the form stays open.
    page.get_by_role("button", name="Save revision").click()
    expect(page.get_by_role("alert")).to_have_text("This revision changes nothing in the review.")

    page.get_by_label("Rejected: keep it out of training data").check()
    page.get_by_label("Note").fill("Invoices moved to the shop's account page.")
    page.get_by_role("button", name="Save revision").click()

    expect(page.locator(".messages")).to_contain_text("Review revised")
    expect(page.locator("section.review h3").first).to_contain_text(
        "Rejected: keep it out of training data"
    )
    page.get_by_text("History (2 revisions)").click()
    history = page.locator(".review-history li")
    expect(history).to_have_count(2)
    expect(history.nth(0)).to_contain_text("kim: submitted as Corrected")
    expect(history.nth(1)).to_contain_text(
        "kim: decision Corrected: the ideal answer is written → Rejected: keep it out of "
        "training data; ideal answer removed; note changed"
    )
    expect(history.nth(1)).to_contain_text("Invoices moved to the shop's account page.")
    assert problems == []

    review.refresh_from_db()
    assert (review.decision, review.ideal_answer, review.note) == (
        "rejected",
        "",
        "Invoices moved to the shop's account page.",
    )
