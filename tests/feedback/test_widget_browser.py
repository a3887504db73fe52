"""The rating widget in a real browser, embedded in a page of another origin.

The host page is served by a small HTTP server of the test's own, on another port than the
live Django server, so every rating is a real cross-origin request with a CORS preflight.
"""

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import expect

from feedback.models import Rating, RatingSource, RatingSubmission
from flywheel.models import Interaction
from flywheel.services import api_key_create
from flywheel.services.interactions import interaction_record
from tests.conftest import SCREENSHOTS, wait_for
from tests.factories import ProjectFactory

DELIVERY_DEADLINE_SECONDS = 15
SENT = "Thanks — rating sent"
FOLLOW_UP_SENT = "Thanks — feedback added"
SAVED_OFFLINE = "Saved offline, will send when back online"
WILL_RETRY = "Saved, will send again shortly"
# Host CSS that would hide or repaint every control the widget draws, were they in the page.
HOSTILE_CSS = """
button, input, textarea, details, summary, label, form, p { display: none !important; }
body { color: red !important; font-size: 4px !important; visibility: visible; }
"""


@dataclass
class HostSite:
    """A second origin that serves the pages a test hands it."""

    server: ThreadingHTTPServer
    pages: dict[str, str] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def serve(self, html: str, path: str = "/") -> str:
        self.pages[path] = html
        return self.origin + path


@pytest.fixture
def host_site():
    pages: dict[str, str] = {}

    class PageHandler(BaseHTTPRequestHandler):
        def do_GET(self):
            html = pages.get(self.path)
            body = (html or "not found").encode()
            self.send_response(200 if html is not None else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):
            pass  # keep the test output for failures

    server = ThreadingHTTPServer(("127.0.0.1", 0), PageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield HostSite(server=server, pages=pages)
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def project(transactional_db):
    return ProjectFactory()


@pytest.fixture
def answer(project) -> Interaction:
    return interaction_record(
        project=project,
        source=Interaction.Source.LOG,
        messages=[{"role": "user", "content": "How long does the bin keep deleted notes?"}],
        query_text="How long does the bin keep deleted notes?",
        response="Deleted notes stay in the bin for 30 days.",
    )


def public_key_for(project, origin: str) -> str:
    return api_key_create(
        project=project, kind="public", name="host page", allowed_origins=[origin]
    ).raw_key


def host_page(
    live_server, *, key: str, interaction_ids: list, rater_id: str = "", before_script: str = ""
) -> str:
    answers = "\n".join(
        f'<div class="answer" data-flywheel-interaction="{interaction_id}">An answer.</div>'
        for interaction_id in interaction_ids
    )
    rater = f' data-rater-id="{rater_id}"' if rater_id else ""
    return f"""<!doctype html>
<html lang="en"><head><title>Host app</title><style>{HOSTILE_CSS}</style></head>
<body>
<h1>Support chat</h1>
{answers}
{before_script}
<script src="{live_server.url}/static/flywheel/widget.js" data-key="{key}"{rater} async></script>
</body></html>"""


def ratings_of(interaction) -> list[Rating]:
    return list(Rating.objects.filter(interaction=interaction))


def test_one_click_on_a_thumb_stores_the_rating(live_server, page, host_site, project, answer):
    key = public_key_for(project, host_site.origin)
    page.goto(host_site.serve(host_page(live_server, key=key, interaction_ids=[answer.pk])))
    comment = page.get_by_label("Comment (optional)")
    expect(comment).to_be_hidden()  # compact: one line under the answer until a thumb is chosen

    page.get_by_role("button", name="Helpful", exact=True).click()

    expect(page.get_by_role("status")).to_have_text(SENT)
    [rating] = ratings_of(answer)
    assert (rating.thumb, rating.comment, rating.source) == ("up", "", RatingSource.WIDGET)
    expect(comment).to_be_visible()  # the follow-up opens, optional


def test_the_thumbs_are_drawn_icons_not_emoji(live_server, page, host_site, project, answer):
    key = public_key_for(project, host_site.origin)
    page.goto(host_site.serve(host_page(live_server, key=key, interaction_ids=[answer.pk])))
    helpful = page.get_by_role("button", name="Helpful", exact=True)
    expect(helpful).to_be_visible()

    icon = helpful.locator("svg path")
    box = icon.bounding_box()
    assert box and box["width"] > 8 and box["height"] > 8
    assert helpful.text_content() == ""  # no emoji or other glyph that a font may lack
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("flywheel-rating").screenshot(path=str(SCREENSHOTS / "widget_compact.png"))
    helpful.click()
    expect(page.get_by_role("status")).to_have_text(SENT)
    page.locator("flywheel-rating").screenshot(path=str(SCREENSHOTS / "widget_follow_up.png"))


def test_a_keyboard_user_rates_then_adds_a_comment_and_a_better_answer_to_the_same_rating(
    live_server, page, host_site, project, answer
):
    key = public_key_for(project, host_site.origin)
    page.goto(
        host_site.serve(
            host_page(live_server, key=key, interaction_ids=[answer.pk], rater_id="app-user-7")
        )
    )
    helpful = page.get_by_role("button", name="Helpful", exact=True)
    not_helpful = page.get_by_role("button", name="Not helpful")
    expect(not_helpful).to_be_visible()  # the host page's CSS does not reach it

    page.keyboard.press("Tab")
    expect(helpful).to_be_focused()
    page.keyboard.press("Tab")
    expect(not_helpful).to_be_focused()
    page.keyboard.press("Space")
    expect(not_helpful).to_have_attribute("aria-pressed", "true")
    expect(helpful).to_have_attribute("aria-pressed", "false")
    status = page.get_by_role("status")
    expect(status).to_have_text(SENT)
    first = Rating.objects.get(interaction=answer)
    assert (first.thumb, first.comment) == ("down", "")

    page.keyboard.press("Tab")
    expect(page.get_by_label("Comment (optional)")).to_be_focused()
    page.keyboard.type("Too vague.")
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Send feedback")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_text("Suggest a better answer")).to_be_focused()
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    better_answer = page.get_by_label("A better answer")
    expect(better_answer).to_be_focused()
    page.keyboard.type("Thirty days, then they are deleted for good.")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    expect(page.get_by_role("button", name="Send feedback")).to_be_focused()
    page.keyboard.press("Enter")

    expect(status).to_have_text(FOLLOW_UP_SENT)
    [rating] = ratings_of(answer)
    assert rating.pk == first.pk
    assert (rating.thumb, rating.comment, rating.correction, rating.source, rating.rater_id) == (
        "down",
        "Too vague.",
        "Thirty days, then they are deleted for good.",
        RatingSource.WIDGET,
        "app-user-7",
    )
    history = RatingSubmission.objects.filter(rating=rating).order_by("pk")
    assert [(item.thumb, item.comment) for item in history] == [
        ("down", ""),
        ("down", "Too vague."),
    ]


def test_changing_the_thumb_after_a_comment_keeps_the_comment(
    live_server, page, host_site, project, answer
):
    key = public_key_for(project, host_site.origin)
    page.goto(host_site.serve(host_page(live_server, key=key, interaction_ids=[answer.pk])))
    page.get_by_role("button", name="Not helpful").click()
    page.get_by_label("Comment (optional)").fill("Which bin?")
    page.get_by_role("button", name="Send feedback").click()
    status = page.get_by_role("status")
    expect(status).to_have_text(FOLLOW_UP_SENT)

    page.get_by_role("button", name="Helpful", exact=True).click()

    expect(status).to_have_text(SENT)
    [rating] = ratings_of(answer)
    assert (rating.thumb, rating.comment) == ("up", "Which bin?")


def test_a_rating_made_offline_is_sent_when_the_browser_is_back_online(
    live_server, page, host_site, project, answer
):
    key = public_key_for(project, host_site.origin)
    page.goto(host_site.serve(host_page(live_server, key=key, interaction_ids=[answer.pk])))

    page.context.set_offline(True)
    page.get_by_role("button", name="Helpful", exact=True).click()
    expect(page.get_by_role("status")).to_have_text(SAVED_OFFLINE)
    assert ratings_of(answer) == []

    page.context.set_offline(False)
    [rating] = wait_for(
        lambda: ratings_of(answer),
        what="the queued rating arriving",
        deadline_seconds=DELIVERY_DEADLINE_SECONDS,
    )
    assert rating.thumb == "up" and rating.rater_id.startswith("anonymous-")
    expect(page.get_by_role("status")).to_have_text(SENT)
    assert page.evaluate("localStorage.getItem('flywheel:queue')") == "[]"


def test_a_rating_still_queued_when_the_page_closed_is_sent_by_the_next_page(
    live_server, page, host_site, project, answer
):
    key = public_key_for(project, host_site.origin)
    url = host_site.serve(host_page(live_server, key=key, interaction_ids=[answer.pk]))
    context = page.context
    page.goto(url)
    context.set_offline(True)
    page.get_by_role("button", name="Not helpful").click()
    expect(page.get_by_role("status")).to_have_text(SAVED_OFFLINE)
    page.close()

    context.set_offline(False)
    assert ratings_of(answer) == []
    context.new_page().goto(url)

    [rating] = wait_for(
        lambda: ratings_of(answer),
        what="the next page sending the queued rating",
        deadline_seconds=DELIVERY_DEADLINE_SECONDS,
    )
    assert rating.thumb == "down"


@pytest.mark.parametrize(
    ("origin_known_to_another_key", "reason"),
    [
        (False, "origin not allowed"),
        (True, "This public key may not be used from this origin"),
    ],
)
def test_a_page_on_an_origin_the_key_does_not_allow_gets_an_error_and_stores_nothing(
    live_server, page, host_site, project, answer, origin_known_to_another_key, reason
):
    key = public_key_for(project, "https://app.example")
    if origin_known_to_another_key:
        # The preflight passes, and the server's own refusal reaches the page.
        public_key_for(ProjectFactory(), host_site.origin)
    page.goto(host_site.serve(host_page(live_server, key=key, interaction_ids=[answer.pk])))
    page.get_by_role("button", name="Helpful", exact=True).click()

    status = page.get_by_role("status")
    expect(status).to_contain_text("Could not send the rating")
    expect(status).to_contain_text(reason)
    assert ratings_of(answer) == []
    assert page.evaluate("localStorage.getItem('flywheel:queue')") == "[]"


def test_markup_in_a_correction_is_stored_verbatim_and_never_runs(
    live_server, page, host_site, project, answer
):
    payload = "<img src=x onerror=window.__xss=1>"
    key = public_key_for(project, host_site.origin)
    page.goto(host_site.serve(host_page(live_server, key=key, interaction_ids=[answer.pk])))
    page.get_by_role("button", name="Not helpful").click()
    page.get_by_text("Suggest a better answer").click()
    page.get_by_label("A better answer").fill(payload)
    page.get_by_label("Comment (optional)").fill(payload)
    page.get_by_role("button", name="Send feedback").click()

    expect(page.get_by_role("status")).to_have_text(FOLLOW_UP_SENT)
    rating = Rating.objects.get(interaction=answer)
    assert rating.correction == payload and rating.comment == payload
    assert page.evaluate("window.__xss") is None


def test_the_javascript_api_with_calls_queued_before_load_and_answers_added_later(
    live_server, page, host_site, project, answer
):
    later_answer = interaction_record(
        project=project,
        source=Interaction.Source.LOG,
        query_text="And then?",
        messages=[{"role": "user", "content": "And then?"}],
        response="They are gone.",
    )
    queued_calls = f"""<script>
window.Flywheel = window.Flywheel || {{q: []}};
Flywheel.q.push(["setRater", "app-user-9"]);
Flywheel.q.push(["rate", {{interactionId: "{answer.pk}", score: 4, tags: ["queued"]}}]);
</script>"""
    key = public_key_for(project, host_site.origin)
    page.goto(
        host_site.serve(
            host_page(live_server, key=key, interaction_ids=[], before_script=queued_calls)
        )
    )

    [queued_rating] = wait_for(
        lambda: ratings_of(answer),
        what="the rating queued before the script loaded",
        deadline_seconds=DELIVERY_DEADLINE_SECONDS,
    )
    assert (queued_rating.rater_id, queued_rating.score, queued_rating.tags) == (
        "app-user-9",
        4,
        ["queued"],
    )

    page.evaluate(
        """id => { const answer = document.createElement("div");
                   answer.dataset.flywheelInteraction = id; document.body.append(answer); }""",
        str(later_answer.pk),
    )
    expect(page.get_by_role("button", name="Not helpful")).to_be_visible()

    result = page.evaluate(
        "id => Flywheel.rate({interactionId: id, thumb: 'down', comment: 'Gone where?'})",
        str(later_answer.pk),
    )
    assert result["status"] == "sent" and result["ratings"][0]["thumb"] == "down"
    refusal = page.evaluate(
        "() => Flywheel.rate({interactionId: crypto.randomUUID(), thumb: 'up'})"
        ".catch(error => ({status: error.status, code: error.code}))"
    )
    assert refusal == {"status": 404, "code": "interaction_not_found"}
    assert Rating.objects.get(interaction=later_answer).comment == "Gone where?"


def test_a_rating_refused_for_the_rate_limit_is_sent_again_after_retry_after(
    live_server, page, host_site, project, answer, settings
):
    settings.FLYWHEEL_RATING_RATE_LIMIT = 1
    settings.FLYWHEEL_RATING_RATE_WINDOW_SECONDS = 3
    key = public_key_for(project, host_site.origin)
    page.goto(host_site.serve(host_page(live_server, key=key, interaction_ids=[answer.pk])))
    first = page.evaluate("id => Flywheel.rate({interactionId: id, thumb: 'up'})", str(answer.pk))
    assert first["status"] == "sent"

    page.get_by_role("button", name="Not helpful").click()
    status = page.get_by_role("status")
    expect(status).to_have_text(WILL_RETRY)
    assert Rating.objects.get(interaction=answer).thumb == "up"

    wait_for(
        lambda: Rating.objects.get(interaction=answer).thumb == "down",
        what="the rating sent again after Retry-After",
        deadline_seconds=DELIVERY_DEADLINE_SECONDS,
    )
    expect(status).to_have_text(SENT)
    queue = json.loads(page.evaluate("localStorage.getItem('flywheel:queue')"))
    assert queue == []
