"""The bundled demo site: a realistic WordPress-like clinic blog served on 127.0.0.1.

These tests hold the site to what the crawler and the search evaluation rely on: robots.txt and
sitemaps that lead to every post, a feed and REST API that paginate like WordPress, validators
for conditional GET, and article pages that carry the topics the lay-query set asks about.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import tomllib
import xml.etree.ElementTree as ET
from collections import deque
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import feedparser
import httpx
import pytest
from bs4 import BeautifulSoup
from protego import Protego

from kb.demo import copy_demo_site, default_root, main, running_demo_site, serve_demo_site
from kb.errors import KBError

SM = "{http://www.sitemaps.org/schemas/sitemap/0.9}"
LAY_QUERIES = Path(__file__).parent / "data" / "lay_queries.toml"


@pytest.fixture(scope="module")
def site():
    server, base = serve_demo_site()
    client = httpx.Client(base_url=base, timeout=10)
    try:
        yield base, client
    finally:
        client.close()
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads(default_root().joinpath("posts.json").read_text("utf-8"))


def soup(text: str) -> BeautifulSoup:
    return BeautifulSoup(text, "lxml")


def entry_text(page_html: str) -> str:
    content = soup(page_html).select_one("div.entry-content")
    assert content is not None
    return content.get_text(" ", strip=True)


@pytest.fixture(scope="module")
def articles(site, meta) -> dict[str, str]:
    """path -> served HTML of every post."""
    _, client = site
    pages = {}
    for post in meta["posts"]:
        r = client.get(post["path"])
        assert r.status_code == 200, post["path"]
        pages[post["path"]] = r.text
    return pages


@pytest.fixture(scope="module")
def texts(articles) -> dict[str, str]:
    """path -> visible text of the entry content of every post."""
    return {path: entry_text(page) for path, page in articles.items()}


# --------------------------------------------------------------------------- robots, sitemaps


def test_robots_txt_has_absolute_sitemap_and_wordpress_rules(site):
    base, client = site
    r = client.get("/robots.txt")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    robots = Protego.parse(r.text)
    assert list(robots.sitemaps) == [f"{base}/wp-sitemap.xml"]
    assert not robots.can_fetch(f"{base}/wp-admin/options.php", "kb")
    assert robots.can_fetch(f"{base}/wp-admin/admin-ajax.php", "kb")
    assert robots.can_fetch(f"{base}/blog/micro-botox/", "kb")
    assert "{{BASE}}" not in r.text


def _locs(client: httpx.Client, url: str, tag: str) -> list[ET.Element]:
    r = client.get(url)
    assert r.status_code == 200, url
    assert r.headers["content-type"].startswith("application/xml")
    return ET.fromstring(r.content).findall(f"{SM}{tag}")


def test_sitemap_index_leads_to_every_post_with_lastmod(site, meta):
    base, client = site
    index = [e.findtext(f"{SM}loc") for e in _locs(client, "/wp-sitemap.xml", "sitemap")]
    assert f"{base}/wp-sitemap-posts-post-1.xml" in index
    assert f"{base}/wp-sitemap-posts-page-1.xml" in index
    posts = {e.findtext(f"{SM}loc"): e.findtext(f"{SM}lastmod")
             for e in _locs(client, f"{base}/wp-sitemap-posts-post-1.xml", "url")}
    assert set(posts) == {base + p["path"] for p in meta["posts"]}
    for post in meta["posts"]:
        assert posts[base + post["path"]].startswith(post["modified_gmt"])
    pages = [e.findtext(f"{SM}loc") for e in _locs(client, f"{base}/wp-sitemap-posts-page-1.xml", "url")]
    assert f"{base}/faq/" in pages and f"{base}/" in pages
    assert client.get("/wp-sitemap-posts-post-2.xml").status_code == 404
    assert client.get("/wp-sitemap-nothing-1.xml").status_code == 404


def test_every_sitemap_url_is_served(site):
    base, client = site
    for sitemap in _locs(client, "/wp-sitemap.xml", "sitemap"):
        for url in _locs(client, sitemap.findtext(f"{SM}loc"), "url"):
            loc = url.findtext(f"{SM}loc")
            assert loc.startswith(base + "/")
            r = client.get(loc)
            assert r.status_code == 200, loc
            assert r.headers["content-type"] == "text/html; charset=utf-8"


def test_every_internal_link_resolves(site, meta):
    """A small breadth-first crawl from the home page: no broken links, no placeholder left."""
    base, client = site
    seen, queue, html_pages = {base + "/"}, deque([base + "/"]), 0
    while queue:
        url = queue.popleft()
        r = client.get(url)
        assert r.status_code == 200, url
        assert "{{BASE}}" not in r.text, url
        if not r.headers["content-type"].startswith("text/html"):
            continue
        html_pages += 1
        for a in soup(r.text).find_all("a", href=True):
            link = urljoin(url, a["href"]).split("#")[0]
            if urlsplit(link).netloc == urlsplit(base).netloc and link not in seen:
                seen.add(link)
                queue.append(link)
        assert len(seen) < 1000, "link explosion"
    assert html_pages > 100  # posts, pages, home pagination, categories, tags, authors
    assert {base + p["path"] for p in meta["posts"] + meta["pages"]} <= seen


# --------------------------------------------------------------------------- feed


def test_feed_paginates_like_wordpress(site, meta):
    base, client = site
    newest_first = [base + p["path"] for p in sorted(meta["posts"], key=lambda p: p["date_gmt"], reverse=True)]
    links: list[str] = []
    page = 1
    while True:
        r = client.get("/feed/", params={"paged": page} if page > 1 else None)
        if r.status_code == 404:
            break
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/rss+xml; charset=utf-8"
        feed = feedparser.parse(r.content)
        assert not feed.bozo, feed.get("bozo_exception")
        assert feed.version == "rss20"
        assert 0 < len(feed.entries) <= 10
        links += [e.link for e in feed.entries]
        page += 1
    assert page - 1 == -(-len(meta["posts"]) // 10)  # 4 pages for 34 posts, then 404
    assert links == newest_first
    assert client.get("/feed/", params={"paged": 2}).status_code == 200
    assert client.get("/feed/", params={"paged": "junk"}).text == client.get("/feed/").text
    assert client.get("/feed").status_code == 301


def test_feed_items_carry_full_content_and_the_appeared_first_footer(site, meta):
    _, client = site
    feed = feedparser.parse(client.get("/feed/").content)
    by_link = {urlsplit(e.link).path: e for e in feed.entries}
    for post in sorted(meta["posts"], key=lambda p: p["date_gmt"], reverse=True)[:10]:
        entry = by_link[post["path"]]
        content = entry.content[0].value
        assert "The post <a" in content and "appeared first on" in content and "Northside Skin Clinic" in content
        assert len(re.sub(r"<[^>]+>", " ", content).split()) > 250
        assert entry.title == post["title"]
        assert entry.id.endswith(f"/?p={post['id']}")
        assert entry.published_parsed[:3] == tuple(int(x) for x in post["date_gmt"][:10].split("-"))
        assert entry.author


# --------------------------------------------------------------------------- REST API


def test_rest_posts_paginate_with_wordpress_headers(site, meta):
    base, client = site
    total = len(meta["posts"])
    ids: list[int] = []
    r = client.get("/wp-json/wp/v2/posts", params={"per_page": 10, "page": 1})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert r.headers["X-WP-Total"] == str(total)
    pages = int(r.headers["X-WP-TotalPages"])
    assert pages == -(-total // 10)
    assert 'rel="next"' in r.headers["Link"]
    for page in range(1, pages + 1):
        batch = client.get("/wp-json/wp/v2/posts", params={"per_page": 10, "page": page}).json()
        ids += [p["id"] for p in batch]
        for p in batch:
            assert p["status"] == "publish" and p["type"] == "post"
            assert p["link"].startswith(base + "/blog/")
            assert p["title"]["rendered"] and p["content"]["rendered"].startswith("<p>")
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", p["modified_gmt"])
            assert p["date_gmt"] <= p["modified_gmt"]
            assert p["categories"] and isinstance(p["tags"], list)
    assert sorted(ids) == sorted(p["id"] for p in meta["posts"])
    too_far = client.get("/wp-json/wp/v2/posts", params={"per_page": 10, "page": pages + 1})
    assert too_far.status_code == 400
    assert too_far.json()["code"] == "rest_post_invalid_page_number"
    assert client.get("/wp-json/wp/v2/posts", params={"per_page": 101}).status_code == 400
    assert client.get("/wp-json/wp/v2/posts", params={"page": "x"}).status_code == 400
    everything = client.get("/wp-json/wp/v2/posts", params={"per_page": 100})
    assert len(everything.json()) == total and "Link" not in everything.headers


def test_rest_fields_filters_and_single_items(site, meta):
    _, client = site
    slim = client.get("/wp-json/wp/v2/posts", params={"_fields": "id,link,modified_gmt"}).json()
    assert all(set(p) == {"id", "link", "modified_gmt"} for p in slim)
    one = client.get("/wp-json/wp/v2/posts", params={"slug": "micro-botox"}).json()
    assert [p["slug"] for p in one] == ["micro-botox"]
    post = client.get(f"/wp-json/wp/v2/posts/{one[0]['id']}").json()
    assert post["id"] == one[0]["id"] and "microbotox" in post["content"]["rendered"].lower()
    missing = client.get("/wp-json/wp/v2/posts/999999")
    assert missing.status_code == 404 and missing.json()["code"] == "rest_post_invalid_id"
    newest = max(p["modified_gmt"] for p in meta["posts"])
    assert client.get("/wp-json/wp/v2/posts", params={"modified_after": newest}).json() == []
    recent = client.get("/wp-json/wp/v2/posts", params={"modified_after": "2025-01-01T00:00:00"}).json()
    assert recent and all(p["modified_gmt"] > "2025-01-01" for p in recent)
    acne = next(c for c in meta["categories"] if c["slug"] == "acne")
    in_acne = client.get("/wp-json/wp/v2/posts", params={"categories": acne["id"], "per_page": 100}).json()
    assert len(in_acne) == acne["count"] and all(acne["id"] in p["categories"] for p in in_acne)
    assert client.get("/wp-json/wp/v2/nothing").json()["code"] == "rest_no_route"
    assert client.get("/?rest_route=/wp/v2/posts/" + str(one[0]["id"])).json()["slug"] == "micro-botox"


def test_rest_categories_tags_and_pages(site, meta):
    _, client = site
    cats = client.get("/wp-json/wp/v2/categories", params={"per_page": 100})
    assert cats.headers["X-WP-Total"] == str(len(meta["categories"]))
    counted = {c["id"]: c["count"] for c in cats.json()}
    for c in meta["categories"]:
        assert counted[c["id"]] == sum(c["id"] in p["categories"] for p in meta["posts"]) > 0
    tags = client.get("/wp-json/wp/v2/tags", params={"per_page": 10})
    assert int(tags.headers["X-WP-TotalPages"]) == -(-len(meta["tags"]) // 10)
    assert all(t["taxonomy"] == "post_tag" for t in tags.json())
    pages = client.get("/wp-json/wp/v2/pages").json()
    assert {p["slug"] for p in pages} >= {"faq", "about"}
    faq = next(p for p in pages if p["slug"] == "faq")
    assert "<details" in faq["content"]["rendered"]
    assert client.get("/wp-json/").json()["namespaces"] == ["wp/v2"]


# --------------------------------------------------------------------------- HTTP behaviour


def test_conditional_get_answers_304(site):
    _, client = site
    for path in ("/blog/vbeam-pulsed-dye-laser-rosacea/", "/feed/", "/wp-sitemap.xml", "/robots.txt",
                 "/wp-json/wp/v2/posts"):
        first = client.get(path)
        etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
        again = client.get(path, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"", path
        assert again.headers["ETag"] == etag
        assert client.get(path, headers={"If-Modified-Since": modified}).status_code == 304, path
        assert client.get(path, headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status_code == 200
        # If-None-Match wins over If-Modified-Since (RFC 9110)
        stale = client.get(path, headers={"If-None-Match": '"other"', "If-Modified-Since": modified})
        assert stale.status_code == 200 and stale.content == first.content


def test_last_modified_follows_the_post(site, meta):
    _, client = site
    post = next(p for p in meta["posts"] if p["slug"] == "melanoma-mole-checks")
    r = client.get(post["path"])
    assert parsedate_to_datetime(r.headers["Last-Modified"]).strftime("%Y-%m-%dT%H:%M:%S") == post["modified_gmt"]


def test_content_types_redirects_and_errors(site, meta):
    base, client = site
    assert client.get("/").headers["content-type"] == "text/html; charset=utf-8"
    assert client.get("/wp-content/themes/northside/style.css").headers["content-type"].startswith("text/css")
    r = client.get("/blog/micro-botox")
    assert r.status_code == 301 and r.headers["Location"] == f"{base}/blog/micro-botox/"
    post = meta["posts"][0]
    r = client.get("/", params={"p": post["id"]})
    assert r.status_code == 301 and r.headers["Location"] == base + post["path"]
    missing = client.get("/blog/no-such-post/")
    assert missing.status_code == 404 and missing.headers["content-type"] == "text/html; charset=utf-8"
    assert "can&rsquo;t be found" in missing.text or "can’t be found" in missing.text
    for hidden in ("/posts.json", "/__init__.py", "/404.html", "/../demo.py", "/%2e%2e/demo.py"):
        assert client.get(hidden).status_code == 404, hidden
    assert client.get("/page/99/").status_code == 404
    assert client.post("/wp-comments-post.php", data={"comment": "hi"}).status_code == 405
    head = client.head("/blog/micro-botox/")
    get = client.get("/blog/micro-botox/")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == get.headers["Content-Length"]
    assert head.headers["ETag"] == get.headers["ETag"]


def test_base_url_follows_the_host_header(site):
    base, client = site
    port = urlsplit(base).port
    r = client.get("/robots.txt", headers={"Host": f"localhost:{port}"})
    assert f"Sitemap: http://localhost:{port}/wp-sitemap.xml" in r.text
    r = client.get("/robots.txt", headers={"Host": "bad host/with spaces"})
    assert f"Sitemap: {base}/wp-sitemap.xml" in r.text


def test_serving_is_quiet(capfd):
    with running_demo_site() as base, httpx.Client(base_url=base) as client:
        client.get("/")
        client.get("/missing/")
        client.get("/feed/", params={"paged": 99})
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# --------------------------------------------------------------------------- pages and content


def test_every_article_page_is_a_complete_wordpress_post(site, meta, articles):
    base, _ = site
    assert len(meta["posts"]) >= 30
    for post in meta["posts"]:
        page = soup(articles[post["path"]])
        assert page.html["lang"] == "en"
        assert page.title.get_text() == f"{post['title']} – Northside Skin Clinic"
        assert page.find("link", rel="canonical")["href"] == base + post["path"]
        assert page.find("meta", attrs={"name": "description"})["content"] == post["excerpt"]
        assert page.find("meta", property="og:url")["content"] == base + post["path"]
        assert page.find("meta", property="article:published_time")["content"].startswith(post["date_gmt"])
        assert page.find("meta", property="article:modified_time")["content"].startswith(post["modified_gmt"])
        ld = json.loads(page.find("script", type="application/ld+json").string)
        article = next(node for node in ld["@graph"] if node["@type"] == "Article")
        assert article["headline"] == post["title"]
        body = page.select_one("main article.post.type-post")
        assert body.select_one("h1.entry-title").get_text() == post["title"]
        assert body.select_one(".byline .author").get_text(strip=True)
        assert body.select_one("time.entry-date")["datetime"].startswith(post["date_gmt"])
        content = body.select_one("div.entry-content")
        assert content.find(["h2", "h3"]) and content.find(["ul", "ol"]) and content.find("p")
        assert 250 <= len(content.get_text(" ", strip=True).split()) <= 500, post["path"]
        assert body.select('.entry-footer a[rel="category tag"]')
        assert page.select_one("#comments") and page.select_one("aside .widget_recent_entries")
        assert page.select_one(".sharedaddy") and page.select_one("footer#colophon")


def test_headings_sometimes_carry_ids(articles):
    with_id = without_id = 0
    for text in articles.values():
        for h in soup(text).select("div.entry-content h2, div.entry-content h3"):
            if h.get("id"):
                with_id += 1
            else:
                without_id += 1
    assert with_id > 20 and without_id > 20


REQUIRED_TOPICS = [
    "sebaceous", "VBeam", "V-Beam", "micro-Botox", "microbotox", "Dysport", "abobotulinumtoxinA",
    "onabotulinumtoxinA", "hyperhidrosis", "IPL", "BBL", "microneedling", "acne", "pimples", "breakouts",
    "melasma", "mask of pregnancy", "melanoma", "ABCDE", "mole mapping", "sunscreen", "SPF", "UVA", "UVB",
    "isotretinoin", "Accutane", "CO₂", "eczema", "atopic dermatitis", "psoriasis", "urticaria", "warts",
    "cold sores", "hair loss", "actinic keratos", "basal cell carcinoma", "Mohs", "chemical peel",
    "tretinoin", "retinoid", "rosacea", "seborrheic keratos", "keloid", "vitiligo", "hyaluronic acid",
    "hyperpigmentation", "skin tags",
]


@pytest.mark.parametrize("topic", REQUIRED_TOPICS)
def test_required_topic_is_covered(texts, topic):
    assert any(topic.lower() in t.lower() for t in texts.values()), topic


def test_melasma_and_melanoma_live_in_separate_articles(texts):
    lower = {path: t.lower() for path, t in texts.items()}
    assert [p for p, t in lower.items() if "melasma" in t and "melanoma" in t] == []
    assert any("melasma" in t for t in lower.values()) and any("melanoma" in t for t in lower.values())


def test_exactly_one_article_carries_a_medical_disclaimer(texts):
    with_disclaimer = [p for p, t in texts.items() if "medical disclaimer" in t.lower()]
    assert len(with_disclaimer) == 1


def test_faq_page_has_faqpage_schema_and_accordions(site):
    _, client = site
    page = soup(client.get("/faq/").text)
    graph = json.loads(page.find("script", type="application/ld+json").string)["@graph"]
    webpage = next(n for n in graph if "FAQPage" in n["@type"])
    questions = [n for n in graph if n["@type"] == "Question"]
    assert len(questions) >= 10 and len(webpage["mainEntity"]) == len(questions)
    details = page.select("div.entry-content details")
    assert [d.summary.get_text(strip=True) for d in details] == [q["name"] for q in questions]
    for d, q in zip(details, questions):
        assert d.select_one(".faq-answer").get_text(strip=True) == q["acceptedAnswer"]["text"]
        assert q["url"].endswith("#" + d["id"])


def test_home_category_and_author_archives(site, meta):
    base, client = site
    newest = sorted(meta["posts"], key=lambda p: p["date_gmt"], reverse=True)
    home = soup(client.get("/").text)
    listed = [a["href"] for a in home.select("main article h2.entry-title a")]
    assert listed == [base + p["path"] for p in newest[:10]]
    assert home.select_one(f'a.page-numbers[href="{base}/page/2/"]')
    page2 = soup(client.get("/page/2/").text)
    assert [a["href"] for a in page2.select("main article h2.entry-title a")] == [base + p["path"] for p in newest[10:20]]
    assert client.get("/page/99/").status_code == 404
    archives = [(c["path"], lambda p, c=c: c["id"] in p["categories"]) for c in meta["categories"]]
    archives += [(a["path"], lambda p, a=a: p["author"] == a["id"]) for a in meta["authors"]]
    for path, belongs in archives:
        expected = [base + p["path"] for p in newest if belongs(p)]
        shown = [a["href"] for a in soup(client.get(path).text).select("main article h2.entry-title a")]
        assert expected and shown == expected[:10], path
        if len(expected) > 10:
            second = soup(client.get(f"{path}page/2/").text).select("main article h2.entry-title a")
            assert [a["href"] for a in second] == expected[10:20], path


# --------------------------------------------------------------------------- serving other copies, errors, CLI


def test_a_copied_site_can_be_changed_while_served(tmp_path, meta):
    root = copy_demo_site(tmp_path / "site")
    assert not (root / "__init__.py").exists()
    post = meta["posts"][0]
    with running_demo_site(root=root) as base, httpx.Client(base_url=base) as client:
        first = client.get(post["path"])
        page = root / post["path"].strip("/") / "index.html"
        page.write_text(page.read_text("utf-8").replace("</h1>", " (updated)</h1>", 1), "utf-8")
        again = client.get(post["path"], headers={"If-None-Match": first.headers["ETag"]})
        assert again.status_code == 200 and "(updated)</h1>" in again.text
        data = json.loads((root / "posts.json").read_text("utf-8"))
        data["posts"] = data["posts"][1:]
        (root / "posts.json").write_text(json.dumps(data), "utf-8")
        assert client.get("/wp-json/wp/v2/posts").headers["X-WP-Total"] == str(len(meta["posts"]) - 1)


def test_bad_root_and_busy_port_raise_kberror_with_a_remedy(tmp_path):
    with pytest.raises(KBError) as excinfo:
        serve_demo_site(root=tmp_path)
    assert "posts.json" in excinfo.value.message and excinfo.value.remedy
    server, base = serve_demo_site()
    try:
        with pytest.raises(KBError) as excinfo:
            serve_demo_site(port=urlsplit(base).port)
        assert excinfo.value.remedy
    finally:
        server.shutdown()
        server.server_close()


def test_main_reports_a_busy_port_without_traceback(capsys):
    server, base = serve_demo_site()
    try:
        assert main(["--port", str(urlsplit(base).port)]) == 2
    finally:
        server.shutdown()
        server.server_close()
    out = capsys.readouterr().out
    assert out.startswith("Error: Cannot serve the demo site") and "Traceback" not in out


def _ignore_sigint() -> None:
    """What a non-interactive shell does to `cmd &`: the child starts with SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("background", [False, True], ids=["foreground", "started-with-&"])
def test_python_m_kb_demo_serves_until_ctrl_c(background):
    proc = subprocess.Popen([sys.executable, "-m", "kb.demo", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent,
                            preexec_fn=_ignore_sigint if background else None)
    try:
        line = proc.stdout.readline()
        base = re.search(r"(http://127\.0\.0\.1:\d+)/", line).group(1)
        with httpx.Client() as client:
            assert client.get(f"{base}/robots.txt").status_code == 200
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0 and "Stopped." in out and err == ""


@pytest.mark.slow
def test_kb_demo_starts_quietly_and_stops_on_ctrl_c_in_the_background(tmp_path, free_port):
    """A newcomer sees a few human lines and the URL, never a JSON log line; Ctrl-C stops it even after `&`."""
    kb = Path(sys.executable).with_name("kb")
    proc = subprocess.Popen([str(kb), "--data-dir", str(tmp_path / "data"), "demo", "--port", str(free_port),
                             "--site-port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_ignore_sigint)
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if "serving on" in line:
                break
        assert lines and f"http://127.0.0.1:{free_port}/" in lines[-1], lines
        assert len(lines) <= 6, lines
        assert not any(line.lstrip().startswith("{") for line in lines), lines
        deadline = time.monotonic() + 15
        while True:  # "serving on" is printed just before the socket is bound
            try:
                assert httpx.get(f"http://127.0.0.1:{free_port}/healthz", timeout=10).status_code == 200
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "kb demo never answered"
                time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == 0


# --------------------------------------------------------------------------- lay-query evaluation set


def test_lay_queries_are_well_formed_and_point_at_real_pages(meta):
    queries = tomllib.loads(LAY_QUERIES.read_text("utf-8"))["query"]
    assert len(queries) >= 45
    known = {p["path"] for p in meta["posts"]} | {p["path"] for p in meta["pages"]}
    texts = [q["text"].strip().lower() for q in queries]
    assert len(set(texts)) == len(texts), "duplicate query"
    for q in queries:
        assert set(q) <= {"text", "expected", "note"}, q
        assert q["text"].strip() and q["expected"], q
        assert set(q["expected"]) <= known, q
    covered = {path for q in queries for path in q["expected"]}
    assert len(covered & {p["path"] for p in meta["posts"]}) >= 30  # the set spans the corpus
