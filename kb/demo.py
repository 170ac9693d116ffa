"""Serve the bundled "Northside Skin Clinic" demo site on 127.0.0.1.

The demo site is a realistic WordPress-like clinic blog, so the crawler, the extractor and the web UI
can be exercised end to end without touching the internet: static article pages, category and tag
archives, robots.txt, a core-style sitemap index, a paginated RSS feed and the wp/v2 REST API.

Article HTML lives in `kb/demo_site/` as real static files (the single source of article text);
`posts.json` holds the metadata (ids, dates, categories, tags). The feed, the sitemaps and the REST
API are generated from both at request time, so nothing is written twice. Links in the files use
the placeholder `{{BASE}}`, replaced per request by `http://host:port`, because WordPress emits
absolute URLs and robots.txt needs an absolute Sitemap line.
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import hashlib
import html
import importlib.resources
import json
import logging
import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from kb.errors import KBError

log = logging.getLogger(__name__)

PLACEHOLDER = "{{BASE}}"
PER_PAGE_MAX = 100
FEED_PAGE_SIZE = 10
# Files of the package that are data for the server, not pages of the site.
HIDDEN = {"posts.json", "404.html", "__init__.py", "__pycache__"}

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".xml": "application/xml; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "application/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".ico": "image/x-icon",
}
SUBSTITUTED = {".html", ".xml", ".txt", ".json"}
RSS_TYPE = "application/rss+xml; charset=utf-8"
XML_TYPE = CONTENT_TYPES[".xml"]
JSON_TYPE = CONTENT_TYPES[".json"]
HTML_TYPE = CONTENT_TYPES[".html"]

_ENTRY_CONTENT = re.compile(r'<div class="entry-content">\n?(.*?)\n?</div><!-- \.entry-content -->', re.S)
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


def default_root() -> Traversable:
    """The demo site shipped inside the package (works for editable and wheel installs)."""
    return importlib.resources.files("kb.demo_site")


def copy_demo_site(dest: Path) -> Path:
    """Copy the bundled site to `dest`, so a test can change pages and serve them with `root=dest`."""

    def _copy(src: Traversable, target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        for child in src.iterdir():
            if child.name in {"__init__.py", "__pycache__"}:
                continue
            if child.is_dir():
                _copy(child, target / child.name)
            else:
                (target / child.name).write_bytes(child.read_bytes())

    _copy(default_root(), Path(dest))
    return Path(dest)


# --------------------------------------------------------------------------- responses


@dataclass
class Response:
    """One answer of the demo site, before conditional-request handling."""

    status: int
    body: bytes = b""
    content_type: str = HTML_TYPE
    headers: list[tuple[str, str]] = field(default_factory=list)
    last_modified: datetime | None = None  # UTC; with the body hash it makes Last-Modified / ETag


def _http_date(dt: datetime) -> str:
    return email.utils.format_datetime(dt.replace(tzinfo=timezone.utc, microsecond=0), usegmt=True)


def _rfc822(dt: datetime) -> str:
    return dt.strftime("%a, %d %b %Y %H:%M:%S +0000")


def _parse_gmt(value: str) -> datetime:
    """posts.json dates are naive UTC ISO strings."""
    return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)


def _rendered(text: str) -> str:
    """Title as WordPress renders it: escaped, typographic characters as numeric entities."""
    out = html.escape(text, quote=False)
    for char, entity in (("\u2019", "&#8217;"), ("\u2018", "&#8216;"), ("\u2013", "&#8211;"),
                         ("\u201c", "&#8220;"), ("\u201d", "&#8221;")):
        out = out.replace(char, entity)
    return out


def _cdata(text: str) -> str:
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _xml(text: str) -> str:
    return html.escape(text, quote=False)


class ApiError(Exception):
    """A wp/v2 error answer: JSON body with code, message and status, like WordPress."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# --------------------------------------------------------------------------- the site


class DemoSite:
    """Routing and rendering of the demo site; no sockets, so it is easy to reason about."""

    def __init__(self, root: Traversable | os.PathLike[str] | str | None = None) -> None:
        if root is None:
            self.root: Traversable = default_root()
        elif isinstance(root, (str, os.PathLike)):
            self.root = Path(root)
        else:
            self.root = root
        if not self.root.joinpath("posts.json").is_file():
            raise KBError(f"{self.root} is not a demo site: posts.json is missing.",
                          "Serve the bundled site (no root) or a copy made with kb.demo.copy_demo_site().")

    # ---- data ---------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        """posts.json, re-read per request so a test can edit a copied site while it is served."""
        return json.loads(self.root.joinpath("posts.json").read_text("utf-8"))

    def _resolve(self, path: str) -> Traversable | None:
        node = self.root
        for segment in [s for s in path.split("/") if s]:
            if segment in HIDDEN or segment.startswith((".", "_")) or segment.endswith((".py", ".pyc")):
                return None
            node = node / segment
            if not (node.is_dir() or node.is_file()):
                return None
        return node

    def _entry_content(self, item: dict[str, Any]) -> str:
        node = self._resolve(item["path"])
        index = node / "index.html" if node is not None and node.is_dir() else None
        if index is None or not index.is_file():
            return ""
        match = _ENTRY_CONTENT.search(index.read_text("utf-8"))
        return match.group(1).strip() + "\n" if match else ""

    @staticmethod
    def _latest(meta: dict[str, Any]) -> datetime:
        return max(_parse_gmt(i["modified_gmt"]) for i in meta["posts"] + meta["pages"])

    # ---- dispatch -----------------------------------------------------------------------

    def respond(self, method: str, target: str) -> Response:
        """Answer one request for `target` (path and query); `{{BASE}}` is still in the body."""
        if method not in ("GET", "HEAD"):
            return Response(405, b"Method Not Allowed\n", CONTENT_TYPES[".txt"], [("Allow", "GET, HEAD")])
        parts = urlsplit(target)
        path = unquote(parts.path) or "/"
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        meta = self.meta()

        if path.startswith("/wp-json") or (path == "/" and "rest_route" in query):
            route = query.pop("rest_route", "") if path == "/" else path[len("/wp-json"):]
            return self._rest(route or "/", query, meta)
        if path == "/" and ("p" in query or "page_id" in query):
            return self._shortlink(query.get("p") or query.get("page_id") or "", meta)
        if path in ("/feed", "/feed/") or (path == "/" and query.get("feed") in ("rss2", "rss")):
            if path == "/feed":
                return self._redirect("/feed/" + (f"?{parts.query}" if parts.query else ""))
            return self._feed(query, meta)
        sitemap = re.fullmatch(r"/wp-sitemap(?:-([a-z_]+(?:-[a-z_]+)?)-(\d+))?\.xml", path)
        if sitemap:
            return self._sitemap(sitemap.group(1), int(sitemap.group(2) or 0), meta)
        if path == "/wp-admin/admin-ajax.php":
            return Response(400, b"0", HTML_TYPE)
        if path.startswith("/wp-admin"):
            return Response(403, b"<!DOCTYPE html><title>Forbidden</title><p>Sorry, you are not allowed to access this page.</p>",
                            HTML_TYPE)
        return self._static(path, parts.query, meta)

    # ---- static files -------------------------------------------------------------------

    def _static(self, path: str, query: str, meta: dict[str, Any]) -> Response:
        node = self._resolve(path)
        if node is not None and node.is_dir():
            if not path.endswith("/"):
                return self._redirect(path + "/" + (f"?{query}" if query else ""))
            node = node / "index.html"
        if node is None or not node.is_file():
            return self.not_found()
        suffix = os.path.splitext(node.name)[1].lower()
        modified = self._latest(meta)
        headers: list[tuple[str, str]] = []
        for item in meta["posts"] + meta["pages"]:
            if item["path"] == path:
                modified = _parse_gmt(item["modified_gmt"])
                kind = "posts" if item in meta["posts"] else "pages"
                headers.append(("Link", f'<{PLACEHOLDER}/wp-json/wp/v2/{kind}/{item["id"]}>; rel="alternate"; '
                                        'type="application/json"'))
                headers.append(("Link", f'<{PLACEHOLDER}/?p={item["id"]}>; rel=shortlink'))
                break
        if suffix == ".html":
            headers.insert(0, ("Link", f'<{PLACEHOLDER}/wp-json/>; rel="https://api.w.org/"'))
        return Response(200, node.read_bytes(), CONTENT_TYPES.get(suffix, "application/octet-stream"),
                        headers, modified)

    def not_found(self) -> Response:
        """The theme's 404 page, as WordPress serves for unknown URLs and feed pages past the end."""
        page = self.root.joinpath("404.html")
        body = page.read_bytes() if page.is_file() else b"<!DOCTYPE html><title>Not found</title><h1>Not found</h1>"
        return Response(404, body, HTML_TYPE)

    @staticmethod
    def _redirect(location: str, status: int = 301) -> Response:
        return Response(status, b"", HTML_TYPE, [("Location", PLACEHOLDER + location)])

    def _shortlink(self, value: str, meta: dict[str, Any]) -> Response:
        for item in meta["posts"] + meta["pages"]:
            if str(item["id"]) == value.strip():
                return self._redirect(item["path"])
        return self.not_found()

    # ---- feed ---------------------------------------------------------------------------

    def _feed(self, query: dict[str, str], meta: dict[str, Any]) -> Response:
        """RSS 2.0 like WordPress: newest first, 10 per page, ?paged=N, 404 past the last page."""
        posts = sorted(meta["posts"], key=lambda p: p["date_gmt"], reverse=True)
        size = int(meta["site"].get("posts_per_rss", FEED_PAGE_SIZE))
        try:
            paged = max(1, int(query.get("paged", "1") or "1"))
        except ValueError:
            paged = 1
        chunk = posts[(paged - 1) * size: paged * size]
        if not chunk and paged > 1:
            return self.not_found()
        site = meta["site"]
        authors = {a["id"]: a["name"] for a in meta["authors"]}
        terms = {t["id"]: t["name"] for t in meta["categories"] + meta["tags"]}
        self_link = f"{PLACEHOLDER}/feed/" + (f"?paged={paged}" if paged > 1 else "")
        items = []
        for p in chunk:
            link = PLACEHOLDER + p["path"]
            footer = (f'<p>The post <a rel="nofollow" href="{link}">{_rendered(p["title"])}</a> appeared first on '
                      f'<a rel="nofollow" href="{PLACEHOLDER}/">{_rendered(site["name"])}</a>.</p>\n')
            summary = f"<p>{html.escape(p.get('excerpt', ''), quote=False)} [&#8230;]</p>\n{footer}"
            categories = "".join(f"\t\t<category>{_cdata(terms[t])}</category>\n"
                                 for t in p["categories"] + p["tags"] if t in terms)
            items.append(
                "\t<item>\n"
                f"\t\t<title>{_xml(p['title'])}</title>\n"
                f"\t\t<link>{link}</link>\n"
                f"\t\t<comments>{link}#comments</comments>\n"
                f"\t\t<dc:creator>{_cdata(authors.get(p['author'], ''))}</dc:creator>\n"
                f"\t\t<pubDate>{_rfc822(_parse_gmt(p['date_gmt']))}</pubDate>\n"
                f"{categories}"
                f'\t\t<guid isPermaLink="false">{PLACEHOLDER}/?p={p["id"]}</guid>\n'
                f"\t\t<description>{_cdata(summary)}</description>\n"
                f"\t\t<content:encoded>{_cdata(self._entry_content(p) + footer)}</content:encoded>\n"
                f"\t\t<slash:comments>{p.get('comment_count', 0)}</slash:comments>\n"
                "\t</item>\n")
        last_build = max(_parse_gmt(p["modified_gmt"]) for p in posts) if posts else self._latest(meta)
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"\n'
            '\txmlns:content="http://purl.org/rss/1.0/modules/content/"\n'
            '\txmlns:wfw="http://wellformedweb.org/CommentAPI/"\n'
            '\txmlns:dc="http://purl.org/dc/elements/1.1/"\n'
            '\txmlns:atom="http://www.w3.org/2005/Atom"\n'
            '\txmlns:sy="http://purl.org/rss/1.0/modules/syndication/"\n'
            '\txmlns:slash="http://purl.org/rss/1.0/modules/slash/"\n\t>\n\n'
            "<channel>\n"
            f"\t<title>{_xml(site['name'])}</title>\n"
            f'\t<atom:link href="{self_link}" rel="self" type="application/rss+xml" />\n'
            f"\t<link>{PLACEHOLDER}/</link>\n"
            f"\t<description>{_xml(site['description'])}</description>\n"
            f"\t<lastBuildDate>{_rfc822(last_build)}</lastBuildDate>\n"
            f"\t<language>{site.get('language', 'en')}</language>\n"
            "\t<sy:updatePeriod>\n\thourly\t</sy:updatePeriod>\n"
            "\t<sy:updateFrequency>\n\t1\t</sy:updateFrequency>\n"
            f"\t<generator>{_xml(site.get('generator', ''))}</generator>\n"
            + "".join(items) +
            "</channel>\n</rss>\n")
        return Response(200, body.encode("utf-8"), RSS_TYPE, [], last_build)

    # ---- sitemaps -----------------------------------------------------------------------

    def _sitemap(self, name: str | None, page: int, meta: dict[str, Any]) -> Response:
        """WordPress core sitemaps: an index, then posts, pages, categories, tags and users."""
        latest = self._latest(meta)
        home = {"path": "/", "modified_gmt": latest.strftime("%Y-%m-%dT%H:%M:%S")}
        groups: dict[str, list[dict[str, Any]]] = {
            "posts-post": sorted(meta["posts"], key=lambda p: p["date_gmt"]),
            "posts-page": [home] + meta["pages"],
            "taxonomies-category": [c for c in meta["categories"] if c.get("count", 1)],
            "taxonomies-post_tag": [t for t in meta["tags"] if t.get("count", 1)],
            "users": meta["authors"],
        }
        head = '<?xml version="1.0" encoding="UTF-8"?>\n'
        if name is None:
            body = head + '<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">' + "".join(
                f"<sitemap><loc>{PLACEHOLDER}/wp-sitemap-{g}-1.xml</loc></sitemap>" for g, v in groups.items() if v
            ) + "</sitemapindex>\n"
            return Response(200, body.encode("utf-8"), XML_TYPE, [], latest)
        entries = groups.get(name)
        if not entries or page != 1:  # every group fits on one page (WordPress: 2,000 URLs)
            return self.not_found()
        urls = []
        for e in entries:
            lastmod = (f"<lastmod>{_parse_gmt(e['modified_gmt']).strftime('%Y-%m-%dT%H:%M:%S+00:00')}</lastmod>"
                       if "modified_gmt" in e else "")
            urls.append(f"<url><loc>{PLACEHOLDER}{e['path']}</loc>{lastmod}</url>")
        body = head + '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">' + "".join(urls) + "</urlset>\n"
        return Response(200, body.encode("utf-8"), XML_TYPE, [], latest)

    # ---- REST API -----------------------------------------------------------------------

    def _rest(self, route: str, query: dict[str, str], meta: dict[str, Any]) -> Response:
        route = "/" + route.strip("/")
        try:
            if route == "/":
                return self._json(self._rest_index(meta), meta)
            match = re.fullmatch(r"/wp/v2/(posts|pages|categories|tags|users)(?:/(\d+))?", route)
            if not match:
                raise ApiError(404, "rest_no_route", "No route was found matching the URL and request method.")
            kind, item_id = match.group(1), match.group(2)
            if kind in ("posts", "pages"):
                return self._rest_posts(kind, item_id, query, meta)
            return self._rest_terms(kind, item_id, query, meta)
        except ApiError as e:
            body = {"code": e.code, "message": e.message, "data": {"status": e.status}}
            return Response(e.status, json.dumps(body).encode("utf-8"), JSON_TYPE)

    def _json(self, data: Any, meta: dict[str, Any], headers: list[tuple[str, str]] | None = None,
              fields: str = "") -> Response:
        if fields:
            wanted = {f.split(".")[0].strip() for f in fields.split(",") if f.strip()}
            if isinstance(data, list):
                data = [{k: v for k, v in d.items() if k in wanted} for d in data]
            else:
                data = {k: v for k, v in data.items() if k in wanted}
        body = json.dumps(data, ensure_ascii=False).encode("utf-8")
        extra = [("Access-Control-Expose-Headers", "X-WP-Total, X-WP-TotalPages, Link"), ("Allow", "GET")]
        return Response(200, body, JSON_TYPE, (headers or []) + extra, self._latest(meta))

    @staticmethod
    def _rest_index(meta: dict[str, Any]) -> dict[str, Any]:
        routes = ["/wp/v2/posts", "/wp/v2/posts/(?P<id>[\\d]+)", "/wp/v2/pages", "/wp/v2/pages/(?P<id>[\\d]+)",
                  "/wp/v2/categories", "/wp/v2/tags", "/wp/v2/users"]
        return {"name": meta["site"]["name"], "description": meta["site"]["description"],
                "url": PLACEHOLDER, "home": PLACEHOLDER, "namespaces": ["wp/v2"],
                "routes": {r: {"namespace": "wp/v2", "methods": ["GET"]} for r in routes}}

    @staticmethod
    def _int(query: dict[str, str], name: str, default: int, low: int, high: int | None = None) -> int:
        raw = query.get(name, "")
        if raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ApiError(400, "rest_invalid_param", f"Invalid parameter(s): {name}") from None
        if value < low or (high is not None and value > high):
            raise ApiError(400, "rest_invalid_param", f"Invalid parameter(s): {name}")
        return value

    @staticmethod
    def _ids(query: dict[str, str], name: str) -> set[int] | None:
        raw = query.get(name, "")
        if not raw:
            return None
        try:
            return {int(x) for x in raw.split(",") if x.strip()}
        except ValueError:
            raise ApiError(400, "rest_invalid_param", f"Invalid parameter(s): {name}") from None

    @staticmethod
    def _when(query: dict[str, str], name: str) -> datetime | None:
        raw = query.get(name, "")
        if not raw:
            return None
        try:
            value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise ApiError(400, "rest_invalid_param", f"Invalid parameter(s): {name}") from None
        return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)

    def _paginate(self, items: list[Any], query: dict[str, str], route: str, *, strict: bool
                  ) -> tuple[list[Any], list[tuple[str, str]]]:
        per_page = self._int(query, "per_page", 10, 1, PER_PAGE_MAX)
        page = self._int(query, "page", 1, 1)
        total = len(items)
        pages = -(-total // per_page)
        if strict and page > max(pages, 1):
            raise ApiError(400, "rest_post_invalid_page_number",
                           "The page number requested is larger than the number of pages available.")
        headers = [("X-WP-Total", str(total)), ("X-WP-TotalPages", str(pages))]
        links = []
        base_query = {k: v for k, v in query.items() if k != "page"}
        if page > 1:
            links.append(f'<{PLACEHOLDER}/wp-json{route}?{urlencode({**base_query, "page": page - 1})}>; rel="prev"')
        if page < pages:
            links.append(f'<{PLACEHOLDER}/wp-json{route}?{urlencode({**base_query, "page": page + 1})}>; rel="next"')
        if links:
            headers.append(("Link", ", ".join(links)))
        return items[(page - 1) * per_page: page * per_page], headers

    def _post_json(self, kind: str, item: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        singular = kind[:-1]
        data: dict[str, Any] = {
            "id": item["id"],
            "date": item["date_gmt"], "date_gmt": item["date_gmt"],
            "guid": {"rendered": f"{PLACEHOLDER}/?{'p' if kind == 'posts' else 'page_id'}={item['id']}"},
            "modified": item["modified_gmt"], "modified_gmt": item["modified_gmt"],
            "slug": item["slug"], "status": "publish", "type": singular,
            "link": PLACEHOLDER + item["path"],
            "title": {"rendered": _rendered(item["title"])},
            "content": {"rendered": self._entry_content(item), "protected": False},
            "excerpt": {"rendered": f"<p>{html.escape(item.get('excerpt', ''), quote=False)}</p>\n", "protected": False},
            "author": item.get("author", 1), "featured_media": 0,
            "comment_status": "open" if kind == "posts" else "closed", "ping_status": "closed",
            "template": "", "meta": [],
        }
        if kind == "posts":
            data.update({"sticky": False, "format": "standard", "categories": item["categories"], "tags": item["tags"]})
        else:
            data.update({"parent": 0, "menu_order": 0})
        data["_links"] = {"self": [{"href": f"{PLACEHOLDER}/wp-json/wp/v2/{kind}/{item['id']}"}],
                          "collection": [{"href": f"{PLACEHOLDER}/wp-json/wp/v2/{kind}"}]}
        return data

    def _rest_posts(self, kind: str, item_id: str | None, query: dict[str, str], meta: dict[str, Any]) -> Response:
        items = list(meta[kind])
        if item_id is not None:
            for item in items:
                if str(item["id"]) == item_id:
                    return self._json(self._post_json(kind, item, meta), meta, fields=query.get("_fields", ""))
            raise ApiError(404, "rest_post_invalid_id", "Invalid post ID.")
        status = query.get("status", "publish")
        if status not in ("publish", "any", ""):
            raise ApiError(400, "rest_invalid_param", "Invalid parameter(s): status")
        if slugs := {s for s in query.get("slug", "").split(",") if s}:
            items = [i for i in items if i["slug"] in slugs]
        if (include := self._ids(query, "include")) is not None:
            items = [i for i in items if i["id"] in include]
        if (exclude := self._ids(query, "exclude")) is not None:
            items = [i for i in items if i["id"] not in exclude]
        if kind == "posts":
            for name in ("categories", "tags"):
                if (wanted := self._ids(query, name)) is not None:
                    items = [i for i in items if wanted & set(i[name])]
        for name, key, after in (("after", "date_gmt", True), ("before", "date_gmt", False),
                                 ("modified_after", "modified_gmt", True), ("modified_before", "modified_gmt", False)):
            if (limit := self._when(query, name)) is not None:
                items = [i for i in items if (_parse_gmt(i[key]) > limit) == after and _parse_gmt(i[key]) != limit]
        if search := query.get("search", "").strip().lower():
            items = [i for i in items
                     if search in (i["title"] + " " + i.get("excerpt", "") + " " + self._entry_content(i)).lower()]
        orderby = query.get("orderby", "date")
        keys = {"date": "date_gmt", "modified": "modified_gmt", "id": "id", "title": "title", "slug": "slug"}
        if orderby not in keys and orderby != "include":
            raise ApiError(400, "rest_invalid_param", "Invalid parameter(s): orderby")
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise ApiError(400, "rest_invalid_param", "Invalid parameter(s): order")
        if orderby != "include":
            items.sort(key=lambda i: (i[keys[orderby]], i["id"]), reverse=order == "desc")
        chunk, headers = self._paginate(items, query, f"/wp/v2/{kind}", strict=True)
        data = [self._post_json(kind, i, meta) for i in chunk]
        return self._json(data, meta, headers, fields=query.get("_fields", ""))

    def _rest_terms(self, kind: str, item_id: str | None, query: dict[str, str], meta: dict[str, Any]) -> Response:
        if kind == "users":
            rows = [{"id": a["id"], "name": a["name"], "url": "", "description": a.get("description", ""),
                     "link": PLACEHOLDER + a["path"], "slug": a["slug"]} for a in meta["authors"]]
        else:
            source = meta["categories"] if kind == "categories" else meta["tags"]
            taxonomy = "category" if kind == "categories" else "post_tag"
            rows = [{"id": t["id"], "count": t.get("count", 0), "description": t.get("description", ""),
                     "link": PLACEHOLDER + t["path"], "name": html.escape(t["name"], quote=False),
                     "slug": t["slug"], "taxonomy": taxonomy, "parent": 0, "meta": []} for t in source]
            if (post := self._ids(query, "post")) is not None:
                assigned = {t for p in meta["posts"] if p["id"] in post for t in p[kind]}
                rows = [r for r in rows if r["id"] in assigned]
            if query.get("hide_empty") in ("1", "true"):
                rows = [r for r in rows if r["count"]]
        for row in rows:
            row["_links"] = {"self": [{"href": f"{PLACEHOLDER}/wp-json/wp/v2/{kind}/{row['id']}"}]}
        if item_id is not None:
            for row in rows:
                if str(row["id"]) == item_id:
                    return self._json(row, meta, fields=query.get("_fields", ""))
            code = "rest_user_invalid_id" if kind == "users" else "rest_term_invalid"
            raise ApiError(404, code, "Term does not exist." if kind != "users" else "Invalid user ID.")
        if slugs := {s for s in query.get("slug", "").split(",") if s}:
            rows = [r for r in rows if r["slug"] in slugs]
        if (include := self._ids(query, "include")) is not None:
            rows = [r for r in rows if r["id"] in include]
        if search := query.get("search", "").strip().lower():
            rows = [r for r in rows if search in r["name"].lower()]
        orderby = query.get("orderby", "name")
        if orderby not in ("name", "id", "slug", "count"):
            raise ApiError(400, "rest_invalid_param", "Invalid parameter(s): orderby")
        if orderby == "count" and kind == "users":
            raise ApiError(400, "rest_invalid_param", "Invalid parameter(s): orderby")
        rows.sort(key=lambda r: (r[orderby], r["id"]), reverse=query.get("order", "asc") == "desc")
        chunk, headers = self._paginate(rows, query, f"/wp/v2/{kind}", strict=False)
        return self._json(chunk, meta, headers, fields=query.get("_fields", ""))


# --------------------------------------------------------------------------- HTTP


def _not_modified(request_headers: Any, etag: str, last_modified: datetime | None) -> bool:
    """RFC 9110: If-None-Match wins; If-Modified-Since only when no If-None-Match was sent."""
    inm = request_headers.get("If-None-Match")
    if inm is not None:
        tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
        return "*" in tags or etag in tags
    ims = request_headers.get("If-Modified-Since")
    if ims and last_modified is not None:
        try:
            since = email.utils.parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=timezone.utc)
        return last_modified.replace(microsecond=0) <= since
    return False


class _Handler(BaseHTTPRequestHandler):
    """Thin HTTP layer over DemoSite: base URL, substitution, validators, quiet logs."""

    protocol_version = "HTTP/1.1"
    server_version = "Apache"
    sys_version = ""
    timeout = 30  # idle keep-alive connections are closed after this many seconds
    disable_nagle_algorithm = True  # headers and body go out in two writes; avoid the 40 ms delayed-ACK stall
    server: "DemoServer"

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self._answer("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._answer("POST")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_POST

    def _base(self) -> str:
        host = self.headers.get("Host", "")
        return f"http://{host}" if host and _HOST.match(host) else self.server.base_url

    def _answer(self, method: str) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(min(length, 1 << 20))
            response = self.server.site.respond(method, self.path)
        except Exception:  # a bug in the demo site must not kill the connection silently
            log.exception("demo site failed on %s %s", method, self.path)
            response = Response(500, b"Internal Server Error\n", CONTENT_TYPES[".txt"])
        base = self._base()
        body = response.body
        ctype = response.content_type
        if ctype.split(";")[0] in ("text/html", "application/xml", "text/plain", "application/json",
                                   "application/rss+xml"):
            body = body.replace(PLACEHOLDER.encode(), base.encode())
        headers = [(k, v.replace(PLACEHOLDER, base)) for k, v in response.headers]
        status = response.status
        validators: list[tuple[str, str]] = []
        if status == 200:
            etag = '"' + hashlib.sha1(body).hexdigest()[:20] + '"'
            validators.append(("ETag", etag))
            if response.last_modified is not None:
                validators.append(("Last-Modified", _http_date(response.last_modified)))
            if method in ("GET", "HEAD") and _not_modified(self.headers, etag, response.last_modified):
                status, body = 304, b""
        self.send_response(status)
        if status != 304:
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
        for name, value in validators + headers:
            self.send_header(name, value)
        self.end_headers()
        if method != "HEAD" and status != 304:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (signature of the base class)
        log.debug("%s %s", self.address_string(), format % args)


class DemoServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that knows its site and base URL and never prints tracebacks."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], site: DemoSite) -> None:
        super().__init__(address, _Handler)
        self.site = site
        host, port = self.server_address[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        shown = f"[{shown}]" if ":" in shown else shown
        self.base_url = f"http://{shown}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up mid-answer are normal for a test server; log quietly instead of stderr."""
        log.debug("connection error from %s", client_address, exc_info=True)


def serve_demo_site(host: str = "127.0.0.1", port: int = 0, *,
                    root: Traversable | os.PathLike[str] | str | None = None) -> tuple[ThreadingHTTPServer, str]:
    """Start the demo site in a daemon thread; returns (server, base_url). Stop with shutdown() + server_close().

    `root` serves another copy of the site (see `copy_demo_site`) instead of the bundled one.
    """
    site = DemoSite(root)
    try:
        server = DemoServer((host, port), site)
    except OSError as e:
        raise KBError(f"Cannot serve the demo site on {host}:{port}: {e.strerror or e}.",
                      "Choose another port (0 picks a free one) or stop the program using it.") from None
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name=f"kb-demo-{server.server_address[1]}", daemon=True)
    thread.start()
    log.info("demo site serving at %s", server.base_url)
    return server, server.base_url


@contextlib.contextmanager
def running_demo_site(host: str = "127.0.0.1", port: int = 0, *,
                      root: Traversable | os.PathLike[str] | str | None = None) -> Iterator[str]:
    """`with running_demo_site() as base_url:` — for tests and scripts that need the site briefly."""
    server, base_url = serve_demo_site(host, port, root=root)
    try:
        yield base_url
    finally:
        server.shutdown()
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    """`python -m kb.demo [--host H] [--port P]`: serve the demo site until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m kb.demo", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8800, help="port to listen on, 0 for any free port (default 8800)")
    parser.add_argument("--root", default=None, help="serve a copied site directory instead of the bundled one")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C works even when started with `&`
    try:
        server, base_url = serve_demo_site(args.host, args.port, root=args.root)
    except KBError as e:
        print(f"Error: {e.message}", *([e.remedy] if e.remedy else []))
        return 2
    print(f"Northside Skin Clinic demo site at {base_url}/  (sitemap {base_url}/wp-sitemap.xml, "
          f"feed {base_url}/feed/). Press Ctrl-C to stop.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("Stopped.")
    finally:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
