"""The dashboard in a real browser: user text never runs as script, htmx filters the list in
place, and the overview draws its charts without a console error."""

import pytest

from feedback.services.ratings import rating_submit
from flywheel.models import Interaction
from flywheel.services.interactions import interactions_log_batch

XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=1">'


@pytest.fixture
def hostile_interaction(transactional_db, project):
    logged = interactions_log_batch(
        project=project,
        interactions=[
            {
                "messages": [{"role": "user", "content": XSS}],
                "response": XSS,
                "model": "gpt-app",
                "retrieved": [{"title": XSS, "text": XSS, "rank": 1}],
            }
        ],
    )
    interaction = Interaction.objects.get(pk=logged[0].id)
    rating_submit(
        interaction=interaction,
        rater_id="rater-1",
        source="api",
        thumb="down",
        comment=XSS,
        correction=XSS,
    )
    return interaction


def test_hostile_text_is_shown_literally_on_the_list_and_the_detail(
    signed_in_page, live_server, project, hostile_interaction
):
    page = signed_in_page

    page.goto(f"{live_server.url}/dashboard/{project.slug}/interactions/")
    row = page.locator("table.interactions tbody tr")
    assert row.count() == 1
    assert XSS in row.inner_text()

    row.get_by_role("link").click()
    page.wait_for_url(f"**/interactions/{hostile_interaction.id}/")
    page.locator("details").first.evaluate("element => element.open = true")
    shown = page.locator("main").inner_text()

    assert shown.count(XSS) >= 5  # question, answer, correction, comment, passage text
    assert page.locator("img[src=x]").count() == 0
    assert page.evaluate("window.__xss") is None
    assert page.problems == []


def test_the_filters_update_the_list_in_place_and_in_the_address(
    signed_in_page, live_server, project, hostile_interaction
):
    calm = {"messages": [{"role": "user", "content": "A calm question"}], "response": "Fine."}
    interactions_log_batch(project=project, interactions=[calm])
    page = signed_in_page
    page.goto(f"{live_server.url}/dashboard/{project.slug}/interactions/")
    assert page.locator("table.interactions tbody tr").count() == 2

    page.select_option("select[name=rating]", "unrated")

    page.wait_for_url("**/interactions/?*rating=unrated*")
    rows = page.locator("table.interactions tbody tr")
    rows.first.get_by_text("A calm question").wait_for()
    assert rows.count() == 1
    assert page.evaluate("window.__xss") is None
    assert page.problems == []


def test_the_overview_draws_its_charts(signed_in_page, live_server, project, hostile_interaction):
    page = signed_in_page

    page.goto(f"{live_server.url}/dashboard/{project.slug}/")

    canvases = page.locator("canvas[data-chart]")
    assert canvases.count() == 4
    drawn = page.evaluate(
        "() => [...document.querySelectorAll('canvas[data-chart]')]"
        ".map(canvas => Boolean(window.Chart.getChart(canvas)) && canvas.width > 0)"
    )
    assert drawn == [True, True, True, True]
    assert page.problems == []
