"""Extraction on saved pages: main text without furniture, sections with anchors, metadata, FAQs, hostile input."""

from __future__ import annotations

import codecs
import gzip
import json
import time
from pathlib import Path

import pytest
from bs4 import BeautifulSoup, Comment

from kb import boilerplate
from kb.errors import SkipPage
from kb.extract import (
    decode_html,
    detect_charset,
    extract,
    extract_faqs,
    has_disclaimer,
    markup,
    meta_robots,
    normalise_date,
    slugify,
    tree,
)
from kb.models import Article, Section

PAGES = Path(__file__).parent / "data" / "pages"
POST_URL = "https://dermnotes.example/2023/05/treating-acne-scars/?utm_source=feed"


def page(name: str) -> bytes:
    return (PAGES / name).read_bytes()


@pytest.fixture(scope="module")
def post() -> Article:
    return extract(page("wp_post.html"), POST_URL)


# ------------------------------------------------------------------------------------ WordPress post

def test_post_metadata(post: Article) -> None:
    assert post.url == POST_URL
    assert post.title == "Treating acne scars: what actually helps"
    assert post.canonical == "https://dermnotes.example/2023/05/treating-acne-scars/"  # relative href resolved
    assert post.description == "An overview of acne scar types and the treatments that improve them."
    assert post.author == "Dr Jane Hollis"
    assert post.published == "2023-05-04T09:30:00+00:00"
    assert post.modified == "2023-06-01T14:05:10+00:00"
    assert post.categories == ["Acne", "Procedures"]
    assert post.tags == ["acne scars", "microneedling"]
    assert post.site == "dermnotes.example"
    assert post.lang == "en-GB"
    assert post.kind == "article"


def test_post_text_is_exactly_the_article(post: Article) -> None:
    assert post.text == "\n\n".join([
        "Acne scars form when deep inflammation damages the collagen of the dermis. Most people with moderate "
        "acne keep a few marks, but only some develop lasting scars.",
        "The good news is that nearly every scar type improves with treatment, although rarely completely.",
        "Types of acne scars",
        "Atrophic scars sit below the skin surface. Ice-pick scars are narrow and deep, boxcar scars have sharp "
        "edges, and rolling scars give the skin a wave-like look.",
        "Ice-pick scars: narrow, deep pits.",
        "Boxcar scars: broad depressions with steep sides.",
        "Rolling scars: shallow, undulating dips.",
        "Raised scars",
        "Hypertrophic and keloid scars are raised and firm. They are more common on the chest, back and jawline.",
        "Treatment options",
        "Microneedling, fractional laser resurfacing and subcision each help different scar types. A "
        "dermatologist often combines them over several sessions.",
        "Treatment options",
        "Steroid injections flatten raised scars over a few months.",
    ])


@pytest.mark.parametrize("furniture", [
    "Skip to content", "About the clinic", "A dermatology notebook",  # skip link, nav, header
    "Posted on", "4 May 2023",  # entry meta
    "appeared first on",  # feed footer
    "Share this", "Twitter", "Facebook",  # share buttons
    "Rosacea triggers you can avoid", "Related",  # related posts
    "Posted in", "Tagged",  # entry footer
    "Previous post", "thoughts on", "three sessions of microneedling", "Leave a Reply",  # post nav, comments
    "Recent Posts", "Book a consultation", "Eczema",  # sidebar widgets
    "Proudly powered", "We use cookies", "Accept",  # footer, cookie banner
    "dataLayer", "tracking", "background:#fff",  # scripts and styles
])
def test_post_furniture_is_absent(post: Article, furniture: str) -> None:
    assert furniture not in post.text
    assert all(furniture not in s.text and furniture not in s.heading for s in post.sections)


def test_post_sections_and_anchors(post: Article) -> None:
    assert [(s.heading, s.anchor, s.level) for s in post.sections] == [
        ("", "", 0),
        ("Types of acne scars", "types-of-scars", 2),  # the heading's own id
        ("Raised scars", "raised-scars", 3),  # generated slug
        ("Treatment options", "treatment-options", 2),  # id of the enclosed <a id>
        ("Treatment options", "treatment-options-2", 2),  # slug made unique on the page
    ]
    assert post.sections[0].text.startswith("Acne scars form when deep inflammation")
    assert post.sections[0].text.endswith("although rarely completely.")
    assert post.sections[1].text.endswith("Rolling scars: shallow, undulating dips.")
    assert post.sections[4].text == "Steroid injections flatten raised scars over a few months."


def test_generated_anchor_avoids_existing_ids() -> None:
    html = """<html><body><div id="sun-safety">x</div><article>
    <p>Sunscreen protects against burning and long-term damage to the skin.</p>
    <h2>Sun safety</h2><p>Seek shade between eleven and three in summer months.</p></article></body></html>"""
    art = extract(html, "https://example.org/sun")
    assert art.sections[-1].anchor == "sun-safety-2"


def test_anchor_from_preceding_named_anchor() -> None:
    html = """<html><body><main><p>Intro text about moles and when to have them checked.</p>
    <a name="abcde"></a><h2>The ABCDE rule</h2><p>Asymmetry, border, colour, diameter and evolution.</p>
    </main></body></html>"""
    art = extract(html, "https://example.org/moles")
    assert art.sections[-1].anchor == "abcde"


# ------------------------------------------------------------------------------------ WordPress page

def test_wp_page() -> None:
    art = extract(page("wp_page.html"), "https://riverside-skin.example/services/patch-testing/")
    assert art.title == "Patch Testing"
    assert art.canonical == "https://riverside-skin.example/services/patch-testing/"
    assert (art.author, art.published, art.modified, art.categories, art.tags) == ("", None, None, [], [])
    assert art.lang == "en-US"
    assert art.text.splitlines()[0].startswith("Patch testing finds the substances")
    assert "Day 3 | First reading" in art.text  # table rows keep their cells apart
    for furniture in ("Book now", "Services", "Home", "Opening hours", "Care Quality", "Book a consultation"):
        assert furniture not in art.text
    assert [(s.heading, s.anchor) for s in art.sections] == [
        ("", ""), ("Before your appointment", "before"), ("What happens on the day", "what-happens-on-the-day"),
    ]


# ------------------------------------------------------------------------- div soup: density fallback

def test_plain_page_density_fallback() -> None:
    art = extract(page("plain_page.html"), "https://skinfacts.example/eczema-children.htm")
    assert art.title == "Eczema in children"  # <title> minus " - Skin Facts"
    assert art.text == "\n\n".join([
        "Atopic eczema usually starts in the first year of life, often on the cheeks and scalp, and later moves "
        "to the creases of the elbows and knees.",
        "Most children grow out of it, but the skin stays dry and needs a fragrance-free emollient every day, "
        "even when it looks clear.",
        "Flares are treated with short courses of a mild topical steroid, applied once a day to the red patches "
        "until they settle.",
        "Wet wraps can help at night during bad flares, but ask your nurse to show you how, so that the "
        "dressings are applied safely.",
    ])
    markup_html = "".join(f"<p>{p}</p>" for p in art.text.split("\n\n"))  # div soup: its paragraphs only
    assert art.sections == [Section(heading="", anchor="", text=art.text, level=0, html=markup_html)]


def test_windows_1252_meta_charset() -> None:
    html = ('<html><head><meta charset="windows-1252"><title>Caf\xe9 au lait spots</title></head>'
            '<body><p>Caf\xe9 au lait spots are flat, evenly coloured patches \u2013 usually harmless.</p></body>'
            '</html>').encode("cp1252")
    art = extract(html, "https://example.org/cal")
    assert art.title == "Café au lait spots"
    assert "patches – usually harmless" in art.text


def test_bom_wins_over_meta() -> None:
    html = '<meta charset="iso-8859-1"><p>Ekzém a svědění kůže u dětí i dospělých.</p>'
    assert "Ekzém a svědění" in decode_html(b"\xef\xbb\xbf" + html.encode("utf-8"))
    assert "Ekzém a svědění" in decode_html(html.encode("utf-16"))


def test_jsonld_article_body_when_page_is_script_rendered() -> None:
    body = "<p>Seborrhoeic dermatitis causes greasy scales on the scalp and face.</p>" * 5
    html = ('<html><head><script type="application/ld+json">{"@type": "NewsArticle", "headline": "Dandruff",'
            f' "articleBody": "{body}"}}</script></head><body><div id="app"><p>Loading the article...</p>'
            '</div></body></html>')
    art = extract(html, "https://example.org/dandruff")
    assert art.title == "Dandruff"
    assert art.text.count("Seborrhoeic dermatitis causes greasy scales") == 5
    assert "Loading" not in art.text


# --------------------------------------------------------------------------------- title with markup

def test_script_in_title_is_kept_as_text() -> None:
    art = extract(page("script_title.html"), "https://skinblog.example/rosacea")
    assert art.title == 'Rosacea <script>alert("title")</script> triggers & tips'
    assert "Write <script>alert(1)</script> in a comment and it stays text, never markup." in art.text


def test_title_prefers_og_title_then_h1() -> None:
    html = ('<html><head><title>Hives | Skin Clinic</title></head><body><article><h1>Hives (urticaria)</h1>'
            '<p>Hives are raised, itchy welts that usually fade within a day.</p></article></body></html>')
    art = extract(html, "https://example.org/hives")
    assert art.title == "Hives (urticaria)"
    assert art.text == "Hives are raised, itchy welts that usually fade within a day."  # title not repeated
    og = html.replace("<title>", '<meta property="og:title" content="Hives explained"><title>')
    assert extract(og, "https://example.org/hives").title == "Hives explained"


# --------------------------------------------------------------------------------------------- FAQs

def test_faqs_from_jsonld_details_and_question_headings() -> None:
    faqs = extract_faqs(page("faq_page.html"), "https://brightskin.example/faq/")
    got = [(f.title, f.text, f.sections[0].anchor) for f in faqs]
    assert got == [
        ("What SPF should I use?", "Use SPF 30 or higher with UVA protection.", "spf"),
        ("How often should I reapply sunscreen?", "Every two hours, and after swimming or sweating.", "reapply"),
        ("Can babies wear sunscreen?",
         "Keep babies under six months out of direct sun; after that, use a mineral sunscreen on exposed skin.",
         "faq-babies"),
        ("Does makeup with SPF count?", "Only if you apply a thick, even layer, which few people do.", ""),
        ("Is a tan ever safe?", "No. A tan is a sign that ultraviolet light has damaged the DNA in your skin cells.",
         "is-a-tan-ever-safe"),
    ]
    for f in faqs:
        assert f.kind == "faq"
        assert f.url == "https://brightskin.example/faq/"
        assert f.site == "brightskin.example"
        assert f.sections == [Section(heading=f.title, anchor=f.sections[0].anchor, text=f.text, level=2)]


def test_faqs_none_on_plain_article() -> None:
    assert extract_faqs(page("wp_page.html"), "https://riverside-skin.example/services/patch-testing/") == []


def test_faqs_survive_empty_and_broken_pages() -> None:
    assert extract_faqs(b"", "https://example.org/") == []
    broken = '<script type="application/ld+json">{"@type": "FAQPage", "mainEntity": [1, {"name": 2}]}</script>'
    assert extract_faqs(broken, "https://example.org/") == []


# ---------------------------------------------------------------------------------- page-level signals

def test_meta_robots() -> None:
    assert meta_robots(page("wp_post.html")) == {"index", "follow", "max-image-preview:large"}
    assert meta_robots('<meta name="ROBOTS" content="NOINDEX, nofollow">') == {"noindex", "nofollow"}
    assert meta_robots('<meta name="robots" content="none">') == {"noindex", "nofollow"}
    assert meta_robots("<p>no meta</p>") == set()
    assert meta_robots(b"") == set()


@pytest.mark.parametrize("text", [
    "This article is not medical advice.",
    "The content is for informational purposes only.",
    "Always consult your dermatologist before starting a new treatment.",
    "Please talk to your doctor about side effects.",
    "This information does not replace professional medical advice.",
])
def test_has_disclaimer(text: str) -> None:
    assert has_disclaimer(text)


@pytest.mark.parametrize("text", ["", "Sunscreen should be reapplied every two hours.", "Our doctors are friendly."])
def test_has_no_disclaimer(text: str) -> None:
    assert not has_disclaimer(text)


def test_faq_page_disclaimer_detected() -> None:
    assert has_disclaimer(extract(page("faq_page.html"), "https://brightskin.example/faq/").text)
    assert not has_disclaimer(extract(page("wp_post.html"), POST_URL).text)


# ---------------------------------------------------------------------------------------------- dates

@pytest.mark.parametrize("raw,expected", [
    ("2023-05-04T09:30:00+00:00", "2023-05-04T09:30:00+00:00"),
    ("2023-05-04T09:30:00Z", "2023-05-04T09:30:00+00:00"),
    ("2023-05-04T09:30:00.123+0200", "2023-05-04T09:30:00+02:00"),
    ("2023-05-04 09:30", "2023-05-04T09:30:00"),
    ("2023-05-04", "2023-05-04"),
    ("20230504", "2023-05-04"),
    ("Thu, 04 May 2023 09:30:00 GMT", "2023-05-04T09:30:00+00:00"),
    ("May 4th, 2023", "2023-05-04"),
    ("4 May 2023", "2023-05-04"),
    ("2023-13-45", None),
    ("yesterday", None),
    ("", None),
])
def test_normalise_date(raw: str, expected: str | None) -> None:
    assert normalise_date(raw) == expected


def test_time_element_and_jsonld_fallbacks() -> None:
    html = """<html><head><script type="application/ld+json">
    {"@type": "Article", "author": [{"@type": "Person", "name": "A. Patel"}, "B. Okafor"],
     "dateModified": "2022-02-03", "keywords": "eczema, emollients", "articleSection": "Eczema"}</script></head>
    <body><article><time datetime="2022-01-15T08:00:00Z">15 January</time>
    <p>Emollients are the foundation of eczema care and should be used every day.</p></article></body></html>"""
    art = extract(html, "https://example.org/emollients")
    assert art.published == "2022-01-15T08:00:00+00:00"
    assert art.modified == "2022-02-03"
    assert art.author == "A. Patel, B. Okafor"
    assert art.tags == ["eczema", "emollients"]
    assert art.categories == ["Eczema"]


def test_slugify() -> None:
    assert slugify("Vitiligo: causes & treatment") == "vitiligo-causes-treatment"
    assert slugify("Ekzém u dětí") == "ekzem-u-deti"
    assert slugify("???") == "section"


# ---------------------------------------------------------------------------------------- hostile input

@pytest.mark.parametrize("html", ["", b"", "   \n", "<html><head></head><body></body></html>",
                                  "<script>var x = 1;</script><nav><a href='/'>Home</a></nav>",
                                  "<title>Only a title</title>", bytes(range(256)) * 50])
def test_no_main_text_raises_skip_page(html: str | bytes) -> None:
    with pytest.raises(SkipPage) as info:
        extract(html, "https://example.org/empty")
    assert info.value.kind == "empty"


def test_unsupported_content_type_is_skipped() -> None:
    with pytest.raises(SkipPage) as info:
        extract(b"%PDF-1.7", "https://example.org/a.pdf", content_type="application/pdf")
    assert info.value.kind == "type"


def test_plain_text_content_type() -> None:
    art = extract(b"Nail fungus\n\nIt grows slowly and treatment takes months.", "https://example.org/n.txt",
                  content_type="text/plain; charset=utf-8")
    assert (art.title, art.text) == ("Nail fungus", "Nail fungus\n\nIt grows slowly and treatment takes months.")


def test_deeply_nested_tags() -> None:
    html = ("<html><body>" + "<div>" * 20000 + "</div>" * 20000 + "<article><p>Psoriasis is a long-term "
            "inflammatory skin condition.</p><p>It runs in families.</p></article></body></html>")
    start = time.perf_counter()
    art = extract(html, "https://example.org/deep")
    assert time.perf_counter() - start < 20
    assert art.text == "Psoriasis is a long-term inflammatory skin condition.\n\nIt runs in families."


def test_text_inside_deep_nesting_is_flattened_not_lost() -> None:
    html = "<html><body>" + "<div>" * 20000 + "<p>Deeply nested text about <b>psoriasis</b> plaques.</p>"
    assert extract(html, "https://example.org/deep").text == "Deeply nested text about psoriasis plaques."


def test_deeply_nested_inline_tags() -> None:
    html = "<p>" + "<b><i>" * 10000 + "Lichen planus affects skin and mouth." + "</i></b>" * 10000 + "</p>"
    assert extract(html, "https://example.org/lp").text == "Lichen planus affects skin and mouth."


def test_huge_attribute_and_nul_bytes() -> None:
    html = (b'<html><body><p class="' + b"x" * 2_000_000 + b'">Vitiligo\x00 causes patches of pale skin.</p>'
            b'<p title="\x00\x00">Pigment cells are lost in the pale patches.</p></body></html>')
    art = extract(html, "https://example.org/vitiligo")
    assert art.text == "Vitiligo causes patches of pale skin.\n\nPigment cells are lost in the pale patches."


def test_broken_jsonld_is_ignored() -> None:
    html = ('<script type="application/ld+json">' + "[" * 50000 + '</script><script type="application/ld+json">'
            '{"@type": "Article", "author": [[[[</script><p>Melasma causes brown patches on the face.</p>')
    art = extract(html, "https://example.org/melasma")
    assert (art.text, art.author) == ("Melasma causes brown patches on the face.", "")


def test_saved_pages_survive_gzip_roundtrip() -> None:
    """The crawler's raw cache may hand back exactly the stored bytes; extraction must not care."""
    raw = page("wp_post.html")
    assert extract(gzip.decompress(gzip.compress(raw)), POST_URL).text == extract(raw, POST_URL).text


# ------------------------------------------------------------------------------------------ boilerplate

def _article(url: str, body: list[str], extra: list[str]) -> Article:
    from kb.extract import extract as _extract

    html = "<article>" + "".join(f"<p>{p}</p>" for p in body) + "".join(extra) + "</article>"
    return _extract(html, url)


CTA = "Book a consultation with our dermatology team today."
DISCLAIMER = "This page is for information only and is not medical advice."


def _site() -> list[Article]:
    bodies = [
        ["Acne is caused by blocked hair follicles and inflammation."],
        ["Eczema makes the skin dry, itchy and cracked."],
        ["Psoriasis causes red, flaky patches covered with scales."],
        ["Rosacea causes flushing and visible blood vessels on the face."],
    ]
    def extra(i: int) -> list[str]:
        name = ("acne", "eczema", "psoriasis")[i]
        return [f"<h2>Treatment</h2><p>Treatment of {name} depends on how severe it is in each patient.</p>"
                f"<h2>Contact us</h2><p>{CTA}</p><p>{DISCLAIMER}</p>"]
    return [_article(f"https://clinic.example/{i}", b, extra(i) if i < 3 else []) for i, b in enumerate(bodies)]


def test_find_and_strip_boilerplate() -> None:
    site = _site()
    hashes = [boilerplate.block_fingerprints(a.text) for a in site]
    found = boilerplate.find_boilerplate(hashes, min_share=0.5, min_pages=3)
    assert boilerplate.fingerprint(CTA) in found and boilerplate.fingerprint(DISCLAIMER) in found
    assert boilerplate.fingerprint(site[0].text.split("\n\n")[0]) not in found
    stripped = boilerplate.strip_boilerplate(site[0], found)
    assert CTA not in stripped.text and DISCLAIMER not in stripped.text
    assert "Contact us" not in stripped.text  # its whole section was boilerplate
    assert "Treatment" in stripped.text  # repeated headings stay: they are structure
    assert [s.heading for s in stripped.sections] == ["", "Treatment"]
    assert stripped.sections[0].text == "Acne is caused by blocked hair follicles and inflammation."
    assert site[0].text.count(CTA) == 1  # the original is untouched


def test_boilerplate_thresholds() -> None:
    site = _site()
    hashes = [boilerplate.block_fingerprints(a.text) for a in site]
    assert boilerplate.find_boilerplate(hashes, min_pages=4) == set()  # on 3 of 4 pages only
    assert boilerplate.find_boilerplate(hashes, min_share=0.9) == set()
    assert boilerplate.find_boilerplate([]) == set()
    assert boilerplate.strip_boilerplate(site[0], set()) is site[0]


def test_fingerprint_normalises_case_digits_and_spacing() -> None:
    assert boilerplate.fingerprint("© 2023 Riverside  Clinic. All rights reserved") == boilerplate.fingerprint(
        "© 2024 riverside clinic - all rights reserved!")
    assert boilerplate.fingerprint("Share") is None


def test_author_from_byline_and_rel_author() -> None:
    base = ('<html><head>{head}</head><body><article>{by}<p>Seborrhoeic keratoses are harmless warty growths '
            'that become more common with age.</p></article></body></html>')
    byline = base.format(head="", by='<div class="byline">By Dr Ana Ruiz</div>')
    assert extract(byline, "https://example.org/sk").author == "Dr Ana Ruiz"
    rel = base.format(head="", by='<p class="who"><a rel="author" href="/team/ng">Dr Kim Ng</a></p>')
    assert extract(rel, "https://example.org/sk").author == "Dr Kim Ng"
    meta = base.format(head='<meta name="author" content="By Lee Park">', by="")
    assert extract(meta, "https://example.org/sk").author == "Lee Park"
    url_only = base.format(head='<meta property="article:author" content="https://facebook.example/lee">', by="")
    assert extract(url_only, "https://example.org/sk").author == ""
    assert "Dr Ana Ruiz" not in extract(byline, "https://example.org/sk").text


def test_article_tag_and_section_meta() -> None:
    html = ('<html><head><meta property="article:tag" content="Moles"><meta property="article:tag" content="moles">'
            '<meta property="article:tag" content="Skin cancer"><meta property="article:section" content="Screening">'
            '</head><body><p>Check your moles once a month for changes in size, shape or colour.</p></body></html>')
    art = extract(html, "https://example.org/moles")
    assert (art.tags, art.categories) == (["Moles", "Skin cancer"], ["Screening"])


def test_charset_from_content_type_header() -> None:
    html = "<p>Ros\xe1cea: rubor facial persistente en mejillas y nariz.</p>".encode("latin-1")
    art = extract(html, "https://example.org/es", content_type="text/html; charset=ISO-8859-1")
    assert art.text == "Rosácea: rubor facial persistente en mejillas y nariz."


def test_content_in_furniture_named_wrappers_is_not_lost() -> None:
    cards = "".join(
        f'<div class="author-card"><h2>Dr {name}</h2><p>Dr {name} is a consultant dermatologist who '
        f'specialises in {topic}, with clinics on weekday mornings.</p></div>'
        for name, topic in (("Amaro", "skin cancer surgery"), ("Brandt", "hair loss"), ("Chu", "eczema in children"))
    )
    html = (f'<html><body><nav><a href="/">Home</a></nav><div class="team"><h1>Our team</h1>{cards}</div>'
            '</body></html>')
    art = extract(html, "https://clinic.example/team/")
    assert art.title == "Our team"
    assert [s.heading for s in art.sections] == ["Dr Amaro", "Dr Brandt", "Dr Chu"]
    assert "specialises in hair loss" in art.text
    assert "Home" not in art.text


def test_article_inside_wrapper_with_furniture_class() -> None:
    paras = "".join(f"<p>{t}</p>" for t in (
        "Contact dermatitis is an itchy rash caused by something that touches the skin.",
        "Irritant reactions are more common than allergic ones and often affect the hands.",
        "Avoiding the trigger and using emollients usually clears the rash within weeks.",
    ))
    html = ('<html><body><header><h1>Contact dermatitis</h1></header>'
            f'<div class="layout-sidebar-right"><div class="story">{paras}</div>'
            '<aside class="rail"><p>Most read: ten facts about sunscreen.</p></aside></div></body></html>')
    art = extract(html, "https://example.org/cd")
    assert art.title == "Contact dermatitis"
    assert art.text.split("\n\n")[0] == "Contact dermatitis is an itchy rash caused by something that touches the skin."
    assert len(art.text.split("\n\n")) == 3 and "Most read" not in art.text


# -- charset detection (shared by the crawler: one decoder for the whole pipeline) --------------------

def test_detect_charset_order() -> None:
    meta = b'<html><head><meta charset="windows-1251"></head>'
    assert detect_charset(meta, "text/html; charset=UTF-8") == "utf-8"  # the header wins
    assert detect_charset(meta, "text/html") == "cp1251"
    assert detect_charset(b'<meta http-equiv="Content-Type" content="text/html; charset=ISO-8859-1">') == "cp1252"
    assert detect_charset(codecs.BOM_UTF8 + meta, "text/html; charset=latin-1") == "utf-8"  # the BOM wins
    assert detect_charset(b"<html>", "text/html; charset=no-such-codec") == "utf-8"
    assert detect_charset(b'<meta charset="utf-16">') == "utf-8"  # readable as ASCII, so not UTF-16


def test_decode_html() -> None:
    assert decode_html("<p>Caf\u00e9</p>".encode("cp1252"), "text/html; charset=iso-8859-1") == "<p>Caf\u00e9</p>"
    mostly_fine = ("<p>" + "good text " * 200 + "</p>").encode() + b"Caf\xe9"
    assert decode_html(mostly_fine).endswith("Caf\ufffd")
    with pytest.raises(SkipPage, match="not valid utf-8") as info:
        decode_html(b"<p>" + bytes(range(0x80, 0x100)) * 20 + b"</p>", "text/html; charset=utf-8", strict=True)
    assert info.value.kind == "bad_encoding"
    assert decode_html(codecs.BOM_UTF16_LE + "<p>h\u00e9</p>".encode("utf-16-le")) == "<p>h\u00e9</p>"


# ------------------------------------------------------------------------------- disclaimer flag on the record

def _disclaimer_page(footer: str, body_extra: str = "") -> str:
    body = " ".join(["Rosacea causes facial redness, flushing and visible vessels on the cheeks and nose."] * 4)
    return f"""<!DOCTYPE html><html lang="en"><head><title>Rosacea</title></head><body>
<nav class="menu"><a href="/">Home</a> <a href="/rosacea/">Rosacea</a></nav>
<main><article><h1>Rosacea</h1><p>{body}</p><p>{body_extra or body}</p></article></main>
<footer class="site-footer"><p>{footer}</p></footer></body></html>"""


def test_disclaimer_in_the_footer_sets_the_flag() -> None:
    article = extract(_disclaimer_page("The information on this site is for informational purposes only and "
                                       "does not replace professional medical advice."), "https://clinic.example/r/")
    assert "informational purposes" not in article.text  # the footer is furniture, not article text
    assert article.disclaimer is True


def test_disclaimer_in_the_article_sets_the_flag() -> None:
    article = extract(_disclaimer_page("© Riverside Clinic", "Always consult your dermatologist before treatment."),
                      "https://clinic.example/r/")
    assert article.disclaimer is True


def test_no_disclaimer_anywhere() -> None:
    article = extract(_disclaimer_page("© Riverside Clinic. Opening hours Monday to Friday."),
                      "https://clinic.example/r/")
    assert article.disclaimer is False
    assert extract("Plain notes on eczema.\n\nEmollients twice a day.", "https://x.example/n.txt",
                   content_type="text/plain").disclaimer is False
    assert extract("Eczema notes.\n\nThis is not medical advice.", "https://x.example/n.txt",
                   content_type="text/plain").disclaimer is True


# ------------------------------------------------------------------- section markup (faithful article pages)

GUTENBERG_URL = "https://riverside-skin.example/blog/vbeam-rosacea/"
ALLOWED_ATTRS = {"a": {"href", "rel"}, "td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan"}}


@pytest.fixture(scope="module")
def gutenberg() -> Article:
    return extract(page("wp_gutenberg.html"), GUTENBERG_URL)


def _markup(html: str) -> BeautifulSoup:
    return BeautifulSoup(f"<div id='root'>{html}</div>", "lxml")


def _assert_safe(html: str) -> None:
    """Only allow-listed elements and attributes, links only to http(s), no comments or active content."""
    root = _markup(html).find(id="root")
    for tag in root.find_all(True):
        assert tag.name in markup.ALLOWED_TAGS, tag.name
        assert set(tag.attrs) <= ALLOWED_ATTRS.get(tag.name, set()), (tag.name, tag.attrs)
        if tag.name == "a":
            assert tag["href"].startswith(("http://", "https://")) and tag["rel"] == ["nofollow", "noopener"]
    assert not root.find_all(string=lambda s: isinstance(s, Comment))
    lowered = html.lower()  # text may say "onerror" or "javascript:"; only escaped, never as markup
    for needle in ("<script", "<style", "<iframe", "<img", "<svg", "<!--", "class=", "style="):
        assert needle not in lowered, needle


def test_gutenberg_post_sections_keep_lists_headings_emphasis_quote_and_table(gutenberg: Article) -> None:
    lead, works, before, results = gutenberg.sections
    assert [(s.heading, s.level) for s in gutenberg.sections] == [
        ("", 0), ("How the VBeam works", 2), ("Before your session", 3), ("Results and aftercare", 2)]
    assert lead.html == ("<p>The <strong>VBeam</strong> is a pulsed dye laser that targets the redness and visible "
                         "vessels of rosacea. Most patients need <em>three to five</em> sessions, four weeks apart.</p>")
    body = _markup(works.html)
    assert [li.get_text() for li in body.select("ul > li")] == [
        "Redness fades over two to six weeks.", "Visible vessels (telangiectasia) often go after one session.",
        "Flushing becomes less frequent; see rosacea triggers."]
    assert body.select_one("ul > li > strong").get_text() == "two to six weeks"
    assert [h.get_text() for h in body.select("h5")] == ["Is it painful?"]  # a sub-heading, not a section
    assert body.select_one("h5 + p br") is not None  # the line break inside the paragraph
    link = body.select_one("li a")
    assert link.attrs == {"href": "https://riverside-skin.example/conditions/rosacea/#triggers",
                          "rel": ["nofollow", "noopener"]}  # made absolute; onclick and style gone
    assert [li.get_text() for li in _markup(before.html).select("ol > li")] == [
        "Avoid sun exposure and self-tan for four weeks.", "Stop retinoid creams three days before."]
    end = _markup(results.html)
    assert end.select_one("blockquote p").get_text().startswith("After three sessions my cheeks are calm")
    assert [th.get_text() for th in end.select("table thead th")] == ["Session", "Typical downtime"]
    assert [[td.get_text() for td in tr.select("td")] for tr in end.select("table tbody tr")] == [
        ["First", "2–3 days of swelling"], ["Later", "A day of redness"]]
    assert [a["href"] for a in end.select("a")] == ["https://www.aad.org/public/diseases/rosacea"]
    assert "Ask our team" in end.get_text()  # the javascript: link is unwrapped: its text stays, the link goes


def test_gutenberg_post_markup_drops_everything_dangerous(gutenberg: Article) -> None:
    for section in gutenberg.sections:
        _assert_safe(section.html)
    everything = "".join(s.html for s in gutenberg.sections)
    for gone in ("Injected by a script", "trackPageView", "wp--preset", "youtube", "vbeam.jpg", "VBeam handpiece",
                 "Share this", "Twitter", "Proudly powered", "Book online"):
        assert gone not in everything, gone
    # markup written out as text in the source stays text: escaped, never an element
    assert "&lt;img src=x onerror=alert(1)&gt;" in gutenberg.sections[-1].html


def test_gutenberg_post_plain_text_keeps_items_and_headings_apart(gutenberg: Article) -> None:
    text = gutenberg.text
    assert "How the VBeam works\n\nThe VBeam emits yellow light" in text
    assert "How the VBeam works The VBeam" not in text and "Is it painful? Each pulse" not in text
    lines = gutenberg.sections[1].text.splitlines()
    for item in ("Redness fades over two to six weeks.", "Visible vessels (telangiectasia) often go after one "
                 "session.", "Flushing becomes less frequent; see rosacea triggers.", "Is it painful?"):
        assert item in lines, item
    assert gutenberg.sections[2].text == ("Avoid sun exposure and self-tan for four weeks.\n\n"
                                          "Stop retinoid creams three days before.")


@pytest.mark.parametrize("name,url", [
    ("wp_gutenberg.html", GUTENBERG_URL), ("wp_post.html", POST_URL),
    ("wp_page.html", "https://riverside-skin.example/services/patch-testing/"),
    ("plain_page.html", "https://example.org/plain"),
])
def test_section_markup_carries_exactly_the_section_text(name: str, url: str) -> None:
    """The markup is the plain text's own blocks: no furniture the text dropped, nothing of it lost."""
    article = extract(page(name), url)
    for section in article.sections:
        _assert_safe(section.html)
        assert markup.clean(section.html) == section.html  # what the page re-checks comes through unchanged
        shown = "".join(_markup(section.html).get_text().split())
        assert shown == "".join(section.text.replace(" | ", "").split()), section.heading


def test_section_markup_of_a_jsonld_article_body() -> None:
    body = "<p>Rosacea is a long-term skin condition. <em>Triggers</em> differ from person to person.</p>" * 6
    html = f"""<html><head><title>Rosacea</title><script type="application/ld+json">
    {{"@type": "Article", "headline": "Rosacea", "articleBody": {json.dumps(body + "<ul><li>Sun</li></ul>")}}}
    </script></head><body><div id="app"></div></body></html>"""
    [section] = extract(html, "https://clinic.example/rosacea").sections
    assert section.html.startswith("<p>Rosacea is a long-term skin condition. <em>Triggers</em>")
    assert section.html.endswith("<ul><li>Sun</li></ul>")


def test_plain_text_pages_have_no_markup() -> None:
    article = extract("Eczema notes.\n\nEmollients twice a day.", "https://x.example/n.txt", content_type="text/plain")
    assert [s.html for s in article.sections] == [""]


@pytest.mark.parametrize("href,expected", [
    ("/conditions/acne/", "https://clinic.example/conditions/acne/"),
    ("../acne/#types", "https://clinic.example/blog/acne/#types"),
    ("https://www.aad.org/x", "https://www.aad.org/x"),
    ("//cdn.example/x", "https://cdn.example/x"),
    ("javascript:alert(1)", None), (" JaVaScRiPt:alert(1)", None), ("java\tscript:alert(1)", None),
    ("java\nscript:alert(1)", None), ("data:text/html,<script>alert(1)</script>", None), ("vbscript:x", None),
    ("mailto:desk@clinic.example", None), ("https://", None), ("https://x.example:99999/", None),
    ("", None), ("https://x.example/\x00", None),
])
def test_safe_href(href: str, expected: str | None) -> None:
    assert markup.safe_href(href, "https://clinic.example/blog/post/") == expected


@pytest.mark.parametrize("fragment", [
    '<img src=x onerror=alert(1)>', '<svg onload=alert(1)><p>t</p></svg>', '<math><mtext><p>t</p></mtext></math>',
    '<a href="jav&#x09;ascript:alert(1)">t</a>', '<a href="&#106;avascript:alert(1)">t</a>',
    '<p style="background:url(javascript:alert(1))" onmouseover="alert(1)">t</p>',
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>"></p></noscript>',
    '<style><img src=x onerror=alert(1)></style>', '<iframe srcdoc="<script>alert(1)</script>"></iframe>',
    '<form action="https://evil.example"><input autofocus onfocus=alert(1)><button>Go</button></form>',
    '<details open ontoggle=alert(1)><summary>t</summary></details>', '<base href="https://evil.example/">',
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">', '<!--<img src=x onerror=alert(1)>-->',
    '<table background="javascript:alert(1)"><tr><td colspan="2" onclick="x">t</td></tr></table>',
    '<a href="https://ok.example/"><a href="https://inner.example/">nested</a></a>',
    '<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>', '<![CDATA[<img src=x onerror=alert(1)>]]>',
    '<object data="x.swf"><embed src="x.swf"></object><template><script>alert(1)</script></template>',
])
def test_clean_refuses_hostile_markup(fragment: str) -> None:
    out = markup.clean(fragment, "https://clinic.example/post/", heading_level=2)
    _assert_safe(out)
    assert markup.clean(out, "https://clinic.example/post/") == out  # stable: cleaning twice changes nothing


def test_clean_shifts_sub_headings_under_the_section_heading() -> None:
    fragment = "<h5>Is it painful?</h5><p>A snap.</p><h6>Numbing</h6><p>Rarely needed.</p><h5>Cost</h5>"
    assert markup.clean(fragment, heading_level=2) == (
        "<h3>Is it painful?</h3><p>A snap.</p><h4>Numbing</h4><p>Rarely needed.</p><h3>Cost</h3>")
    assert markup.clean("<h2>Deep</h2>", heading_level=5) == "<h6>Deep</h6>"  # never beyond h6
    assert markup.clean("<h5>Kept</h5>") == "<h5>Kept</h5>"


def test_clean_gives_loose_text_a_paragraph_and_stray_list_text_an_item() -> None:
    assert markup.clean("loose <b>bold</b><div>block</div>") == "<p>loose <b>bold</b></p><p>block</p>"
    assert markup.clean("<ul>stray<li>item</li></ul>") == "<ul><li>stray</li><li>item</li></ul>"
    assert markup.clean("<blockquote>Calm skin. <cite>A patient</cite></blockquote>") == (
        "<blockquote><p>Calm skin. A patient</p></blockquote>")
    assert markup.clean("<p>One<br><br>Two <b>bold </b>end<br></p>") == "<p>One</p><p>Two <b>bold </b>end</p>"
    assert markup.clean("<li>One<br><br>Two</li>") == "<li>One<br><br>Two</li>"  # a list item stays one item


# ------------------------------------------------------------------------------------------- the package

def test_public_names_live_in_their_parts() -> None:
    """kb.extract re-exports each part's public names; callers needing one part import it from its home."""
    import kb.extract
    from kb import disclaimer, text
    from kb.extract import charset, faq, metadata, page

    homes = {"decode_html": charset, "detect_charset": charset, "extract_faqs": faq, "meta_robots": metadata,
             "normalise_date": metadata, "extract": page, "HTML_TYPES": page, "slugify": text,
             "has_disclaimer": disclaimer}
    assert set(kb.extract.__all__) == set(homes)
    for name, home in homes.items():
        assert getattr(kb.extract, name) is getattr(home, name), name


# -- hostile markup: refused before any parse ---------------------------------------------------------------

def _attribute_bomb(n: int, sep: str = " ") -> str:
    return "<html><body><p " + sep.join(f"a{i:x}=1" for i in range(n)) + ">x</p></body></html>"


def test_check_markup_refuses_an_attribute_bomb() -> None:
    with pytest.raises(SkipPage) as caught:
        tree.check_markup(_attribute_bomb(tree.MAX_ATTRIBUTES + 1))
    assert caught.value.kind == "hostile_markup" and "<p> element has more than 5,000 attributes" in str(caught.value)
    tree.check_markup(_attribute_bomb(tree.MAX_ATTRIBUTES))  # at the bound: fine


@pytest.mark.parametrize("attributes", [
    "".join(f'a{i:x}="1"' for i in range(6000)),  # no space after a quoted value (HTML5 starts a new attribute)
    'q=">" ' + " ".join(f"a{i:x}" for i in range(6000)),  # a quoted ">" does not end the tag
    '="x ' + " ".join(f"a{i:x}" for i in range(6000)),  # "=" and a quote starting a name are not a value
    " ".join(f'"a{i:x}' for i in range(6000)),  # names may start with a quote
])
def test_check_markup_reads_attributes_as_the_html5_tokenizer_does(attributes: str) -> None:
    with pytest.raises(SkipPage, match="attributes"):
        tree.check_markup(f"<p {attributes}>x</p>")


def test_check_markup_bounds_attribute_work_over_many_elements() -> None:
    element = "<p " + " ".join(f"a{i:x}=1" for i in range(4000)) + ">x</p>"  # each under MAX_ATTRIBUTES
    with pytest.raises(SkipPage, match="too many attributes on its elements") as caught:
        tree.check_markup(element * 7)
    assert caught.value.kind == "hostile_markup"


def test_check_markup_refuses_an_element_flood() -> None:
    with pytest.raises(SkipPage, match="more than 50,000 elements") as caught:
        tree.check_markup("<main>" + "<div>" * tree.MAX_ELEMENTS + "</main>")
    assert caught.value.kind == "hostile_markup"


def test_check_markup_is_fast_on_a_5_mb_page() -> None:
    para = '<p class="entry" id="x">' + "word " * 40 + '<a href="/somewhere/">link</a></p>\n'
    text = "<html><body>" + para * (5_000_000 // len(para))
    started = time.perf_counter()
    tree.check_markup(text)
    with pytest.raises(SkipPage):
        tree.check_markup(_attribute_bomb(450_000))  # the attack's 3.98 MB page
    assert time.perf_counter() - started < 3  # ~0.4 s here


def test_check_markup_accepts_real_pages() -> None:
    demo = Path(__file__).parent.parent / "kb" / "demo_site"
    pages = [*PAGES.glob("*.html"), *demo.rglob("*.html")]
    assert len(pages) > 50
    for path in pages:
        tree.check_markup(decode_html(path.read_bytes(), "text/html"))


def test_extract_refuses_hostile_markup_fast() -> None:
    started = time.perf_counter()
    with pytest.raises(SkipPage) as caught:
        extract(_attribute_bomb(20_000).encode(), "https://example.org/bomb/")
    assert caught.value.kind == "hostile_markup" and time.perf_counter() - started < 1
