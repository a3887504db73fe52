"""A reviewer judges a candidate's shadow answer beside the served one in a real browser, then
reviews the item as usual."""

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from feedback.models import PairwiseJudgement, Review
from feedback.services.ratings import rating_submit
from flywheel.models import ModelVersion, ShadowAnswer
from tests.conftest import user_with_role
from tests.factories import ProjectFactory, served


@pytest.mark.django_db(transaction=True)
def test_a_reviewer_judges_the_shadow_answer_side_by_side(live_server, page):
    project = ProjectFactory()
    reviewer = user_with_role(project, "reviewer", "kim")
    interaction = served(project, "How do I export my data?", answer="Exports are not supported.")
    rating_submit(interaction=interaction, rater_id="end-user", source="widget", thumb="down")
    candidate = ModelVersion.objects.create(project=project, name="lora-7", base_model="")
    shadow = ShadowAnswer.objects.create(
        interaction=interaction,
        experiment_id=3,
        model_version=candidate,
        response="Open Settings, then Export, and pick JSON or CSV.",
        latency_ms=380,
    )
    queue_path = reverse("dashboard:queue", kwargs={"project_slug": project.slug})

    page.goto(f"{live_server.url}{reverse('login')}?next={queue_path}")
    page.get_by_label("Username").fill("kim")
    page.get_by_label("Password").fill("pw-kim")
    page.keyboard.press("Enter")

    comparison = page.locator(f'[data-shadow-answer="{shadow.pk}"]')
    served_side = comparison.get_by_role("figure").filter(has_text="Served")
    shadow_side = comparison.get_by_role("figure").filter(has_text="Shadow, by lora-7")
    expect(served_side).to_contain_text("Exports are not supported.")
    expect(shadow_side).to_contain_text("Open Settings, then Export, and pick JSON or CSV.")

    comparison.get_by_label("Why").fill("It names the menu")
    comparison.get_by_role("button", name="Shadow is better").click()

    expect(page.get_by_role("status")).to_contain_text("the candidate's shadow answer is better")
    # htmx swapped in the same item, now showing the judgement; it still awaits its review.
    expect(page.locator(".queue-judged")).to_contain_text("The candidate's shadow answer is better")
    judgement = PairwiseJudgement.objects.get()
    assert (judgement.reviewer, judgement.preferred, judgement.note) == (
        reviewer,
        "shadow",
        "It names the menu",
    )

    # Changing one's mind replaces the judgement; then the item is reviewed as any other.
    page.locator(f'[data-shadow-answer="{shadow.pk}"]').get_by_role("button", name="Tie").click()
    expect(page.locator(".queue-judged")).to_contain_text("Neither is better")
    page.keyboard.press("a")
    expect(page.get_by_role("heading", name="The queue is empty")).to_be_visible()

    assert list(PairwiseJudgement.objects.values_list("preferred", flat=True)) == ["tie"]
    assert Review.objects.get().decision == Review.Decision.APPROVED
