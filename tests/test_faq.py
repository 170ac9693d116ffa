"""The patient FAQ: question/answer records made from FAQ pages by the crawl (unique URLs, the page's audience,
kept in step with the page), the /faq page by topic, and the inline answer when a question is the best match."""

from __future__ import annotations

from pathlib import Path

import pytest
from bs4 import BeautifulSoup

from kb import index, users
from kb.config import data_paths
from kb.faq import OTHER_TOPIC, faq_topics, guess_topic
from kb.models import Article, Section
from kb.pipeline import crawl_source, faq_records, is_faq_page
from kb.sources import Source
from kb.store import Store
from kb.web import create_app
from tests.fixture_site import FixtureSite, make_settings

PASSWORD = "correct horse battery"

FAQ_HTML = """<!doctype html><html lang="en"><head><title>Frequently asked questions – Clinic</title>
<script type="application/ld+json">{"@context": "https://schema.org", "@type": "FAQPage", "mainEntity": [
{"@type": "Question", "name": "Do I need a referral?", "acceptedAnswer": {"@type": "Answer",
 "text": "No. You can book most appointments directly with us."}},
{"@type": "Question", "name": "How long does acne treatment take to work?", "acceptedAnswer": {"@type": "Answer",
 "text": "<p>Most acne treatments need eight to twelve weeks to show their full effect.</p>"}}]}</script>
</head><body><main><h1>Frequently asked questions</h1>
<details id="faq-referral"><summary>Do I need a referral?</summary><p>No. You can book most appointments directly
with us.</p></details>
<details><summary>Can I bring my child?</summary><p>Yes, children are welcome with a parent or guardian.</p></details>
<h2 id="parking">Where can I park?</h2><p>There is free parking behind the clinic for all of our patients.</p>
<h2 id="hours">Opening hours</h2><p>We are open from eight until six on weekdays and on Saturday mornings.</p>
</main></body></html>"""

STAFF_FAQ_HTML = """<!doctype html><html lang="en"><head><title>Staff FAQ</title></head><body><main>
<h1>Staff FAQ</h1><p>Internal answers for clinic staff about protocols and escalation of treatment.</p>
<h2 id="escalate">When do we escalate isotretinoin?</h2><p>After two failed courses of oral antibiotics, the
consultant reviews the isotretinoin protocol with the patient.</p>
<h2 id="locum">Who signs off locum laser sessions?</h2><p>The lead nurse signs off every locum laser session.</p>
</main></body></html>"""


def page_article(url: str, html: str, **changes) -> Article:
    from kb.extract import extract

    article = extract(html, url)
    for key, value in changes.items():
        setattr(article, key, value)
    return article


# -- records from pages ----------------------------------------------------------------------------------------

def test_faq_records_have_unique_urls_and_inherit_the_page() -> None:
    page = page_article("https://clinic.example/faq/", FAQ_HTML, audience="staff", categories=["Visits"],
                        tags=["booking"], site="clinic.example", published="2024-01-02")
    records = faq_records(FAQ_HTML, page)
    assert [r.title for r in records] == ["Do I need a referral?", "How long does acne treatment take to work?",
                                          "Can I bring my child?", "Where can I park?"]
    assert [r.url for r in records] == [
        "https://clinic.example/faq/#faq-referral",
        "https://clinic.example/faq/#faq-how-long-does-acne-treatment-take-to-work",
        "https://clinic.example/faq/#faq-can-i-bring-my-child",
        "https://clinic.example/faq/#parking",
    ]
    for r in records:
        assert (r.kind, r.audience, r.site, r.categories, r.tags, r.published) == (
            "faq", "staff", "clinic.example", ["Visits"], ["booking"], "2024-01-02")
        assert r.sections == [] and r.text and r.canonical == ""
    assert "eight to twelve weeks" in records[1].text and "<p>" not in records[1].text


def test_repeated_anchors_get_numbered() -> None:
    html = ("<html><head><title>FAQ</title></head><body><main><h1>FAQ</h1>"
            + "".join(f'<details id="q"><summary>Question number {n}?</summary><p>Answer number {n} is here.</p>'
                      "</details>" for n in range(3)) + "</main></body></html>")
    records = faq_records(html, page_article("https://clinic.example/help/faq/", html))
    assert [r.url.rsplit("#", 1)[1] for r in records] == ["q", "q-2", "q-3"]


def test_only_faq_pages_become_questions() -> None:
    blog = ("<html><head><title>Broken capillaries</title></head><body><main><h1>Broken capillaries</h1>"
            "<p>Small red vessels on the face are common and harmless in most people.</p>"
            "<h2 id='causes'>What causes them?</h2><p>Sun damage, rosacea and genetics all play a part in them.</p>"
            "<h2 id='creams'>Can creams help?</h2><p>Creams do not remove vessels but calm the redness a little.</p>"
            "<h2 id='laser'>Laser treatment</h2><p>Pulsed dye laser closes the vessels in two or three sessions.</p>"
            "</main></body></html>")
    article = page_article("https://clinic.example/blog/broken-capillaries/", blog)
    assert not is_faq_page(blog, article) and faq_records(blog, article) == []
    for url, title in (("https://clinic.example/faq/", "Help"), ("https://clinic.example/x/", "Your questions answered"),
                       ("https://clinic.example/patient-faqs.html", "Help")):
        assert is_faq_page(blog, page_article(url, blog, title=title)), url
    many = blog.replace("<h2 id='laser'>Laser treatment</h2>", "".join(
        f"<h2 id='q{n}'>Is question {n} answered?</h2><p>Yes, question {n} has a long enough answer.</p>"
        for n in range(4)))
    assert is_faq_page(many, page_article("https://clinic.example/blog/qa/", many))


# -- crawling keeps FAQ records in step with their pages --------------------------------------------------------

def faq_urls(store: Store, site: FixtureSite) -> dict[str, tuple[int, str]]:
    return {r["url"][len(site.url):]: (r["id"], r["audience"])
            for r in store.faq_entries(("public", "staff"), limit=1000)}


def test_crawl_stores_faq_entries_with_their_pages_audience_and_keeps_them_in_step(
        site: FixtureSite, store: Store, data_dir: Path) -> None:
    site.set("/", site.pages["/"][2].replace("</body>", '<a href="/faq/">FAQ</a> <a href="/staff/faq/">Staff FAQ</a>'
                                                         "</body>"))
    site.set("/faq/", FAQ_HTML)
    site.set("/staff/faq/", STAFF_FAQ_HTML)
    source = Source(name="blog", url=site.url + "/", staff_paths=["/staff/"])
    settings = make_settings(data_dir)
    crawl_source(source, store, settings)
    found = faq_urls(store, site)
    assert {path: audience for path, (_, audience) in found.items()} == {
        "/faq/#faq-referral": "public", "/faq/#faq-how-long-does-acne-treatment-take-to-work": "public",
        "/faq/#faq-can-i-bring-my-child": "public", "/faq/#parking": "public",
        "/staff/faq/#escalate": "staff", "/staff/faq/#locum": "staff",
    }
    assert store.get_article_by_url(site.abs("/faq/")).kind == "article"  # the page itself stays an article

    changes = store.last_change()
    crawl_source(source, store, settings)  # nothing changed: nothing written
    assert store.last_change() == changes and faq_urls(store, site) == found

    site.set("/faq/", FAQ_HTML.replace("<details><summary>Can I bring my child?</summary><p>Yes, children are "
                                       "welcome with a parent or guardian.</p></details>", ""))
    crawl_source(source, store, settings)
    after = faq_urls(store, site)
    assert "/faq/#faq-can-i-bring-my-child" not in after
    assert {k: v for k, v in found.items() if k != "/faq/#faq-can-i-bring-my-child"} == after  # same ids

    site.remove("/faq/")
    stats = crawl_source(source, store, settings)
    assert stats.removed == 1 and store.get_article_by_url(site.abs("/faq/")) is None
    assert set(faq_urls(store, site)) == {"/staff/faq/#escalate", "/staff/faq/#locum"}


# -- the /faq page and the inline answer ------------------------------------------------------------------------

def fill(store: Store) -> dict[str, int]:
    ids = {}
    items = [
        ("https://c.example/faq/#a", "How long does acne treatment take to work?",
         "Most acne treatments need eight to twelve weeks.", ["Acne"], "public"),
        ("https://c.example/faq/#b", "Do I need a referral?", "No, book directly.", [], "public"),
        ("https://c.example/faq/#c", "How much downtime is there after laser treatment?",
         "A day or two of pinkness after VBeam.", [], "public"),
        ("https://intranet.example/faq/#d", "When do we escalate isotretinoin?",
         "After two failed antibiotic courses.", ["Acne"], "staff"),
    ]
    for url, title, text, categories, audience in items:
        ids[title], _ = store.save_article(Article(url=url, title=title, text=text, categories=categories,
                                                   audience=audience, kind="faq", site=url.split("/")[2]))
    ids["laser article"], _ = store.save_article(Article(
        url="https://c.example/lasers/", title="Lasers and light", text="Laser treatment of redness and veins.",
        categories=["Lasers & Light"], sections=[Section("Lasers", "lasers", "Laser treatment of redness.")]))
    ids["acne article"], _ = store.save_article(Article(
        url="https://c.example/acne/", title="Acne explained", text="Acne treatment takes patience; acne acne.",
        categories=["Acne"]))
    return ids


def test_faq_topics_group_by_category_or_the_topic_a_question_names(any_store: Store) -> None:
    fill(any_store)
    public = faq_topics(any_store, ("public",))
    assert [(t.name, [e.question for e in t.entries]) for t in public] == [
        ("Acne", ["How long does acne treatment take to work?"]),
        ("Lasers & Light", ["How much downtime is there after laser treatment?"]),
        (OTHER_TOPIC, ["Do I need a referral?"]),
    ]
    staff = faq_topics(any_store, ("public", "staff"))
    assert [e.question for e in staff[0].entries] == ["How long does acne treatment take to work?",
                                                      "When do we escalate isotretinoin?"]
    assert guess_topic("Is skin care hard?", ["Skin Care", "Acne"]) is None  # generic words file nothing
    assert guess_topic("Are lasers safe?", ["Skin Care", "Lasers & Light"]) == "Lasers & Light"


@pytest.fixture
def faq_app(data_dir: Path, store: Store):
    ids = fill(store)
    users.add_user(store, "alice", PASSWORD)
    index.rebuild(store, data_paths(data_dir)["index"])
    app = create_app({"DATA_DIR": str(data_dir), "TESTING": True, "QUERY_LOG": False})
    yield app, ids
    app.extensions["kb"].close()


def test_faq_page_lists_public_questions_by_topic_with_answers_and_sources(faq_app) -> None:
    app, ids = faq_app
    with app.test_client() as client:
        response = client.get("/faq")
    assert response.status_code == 200
    page = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    assert page.h1.get_text() == "Frequently asked questions"
    assert [a.get_text() for a in page.select("nav.toc a")] == ["Acne", "Lasers & Light", OTHER_TOPIC]
    for link in page.select("nav.toc a"):
        assert page.find(id=link["href"][1:]).name == "h2"
    items = page.select("details.faq-item")
    assert [d.summary.get_text(strip=True) for d in items] == [
        "How long does acne treatment take to work?", "How much downtime is there after laser treatment?",
        "Do I need a referral?"]
    first = items[0]
    assert "eight to twelve weeks" in first.get_text() and first.select_one("a.source-link")["href"] == \
        "https://c.example/faq/#a"
    assert page.select_one(".disclaimer") and "escalate" not in response.get_data(as_text=True)
    with app.test_client() as client:
        token = BeautifulSoup(client.get("/login").get_data(as_text=True), "html.parser").find(
            "input", attrs={"name": "csrf_token"})["value"]
        client.post("/login", data={"csrf_token": token, "username": "alice", "password": PASSWORD})
        staff = BeautifulSoup(client.get("/faq").get_data(as_text=True), "html.parser")
    marked = [d for d in staff.select("details.faq-item") if d.select_one(".chip-staff")]
    assert [d.summary.get_text(" ", strip=True) for d in marked] == ["When do we escalate isotretinoin? Staff only"]


def test_empty_faq_page_says_so(data_dir: Path) -> None:
    app = create_app({"DATA_DIR": str(data_dir), "TESTING": True})
    with app.test_client() as client:
        response = client.get("/faq")
    assert response.status_code == 200 and "no questions and answers here yet" in response.get_data(as_text=True)
    app.extensions["kb"].close()


def test_best_matching_question_is_answered_inline_with_its_source(faq_app) -> None:
    app, ids = faq_app
    with app.test_client() as client:
        page = BeautifulSoup(client.get("/search?q=how+long+does+acne+treatment+take+to+work").get_data(as_text=True),
                             "html.parser")
        answer = page.select_one("section.faq-answer")
        assert answer is not None and answer.h2.get_text() == "How long does acne treatment take to work?"
        assert "eight to twelve weeks" in answer.get_text()
        assert answer.select_one("a.source-link")["href"] == "https://c.example/faq/#a"
        assert answer.select_one(".disclaimer")
        answered = f"/article/{ids['How long does acne treatment take to work?']}"
        listed = [a["href"] for a in page.select("#results li.result a.result-title")]
        assert listed and answered not in listed  # the answer box is not repeated as result #1 below it
        # The best match is an article, or the page is not the first: no inline answer.
        assert BeautifulSoup(client.get("/search?q=lasers+and+light").get_data(as_text=True),
                             "html.parser").select_one("section.faq-answer") is None
        assert BeautifulSoup(client.get("/search?q=acne&page=2").get_data(as_text=True),
                             "html.parser").select_one("section.faq-answer") is None
