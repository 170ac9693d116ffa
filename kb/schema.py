"""Schema: the index's fields, how an article maps to stored fields and back, and the on-disk layout.

Shared by the one writer (kb.index) and the reader (kb.search), so neither reaches into the other:
the Whoosh schema, the document mapping (`article_document`) and the decoding of stored fields
into a `Hit` are written once here, beside the layout both must agree on. Layout under `index_root`:

    CURRENT                  name of the generation readers use (replaced atomically)
    WRITELOCK                one writer at a time across rebuild and update
    gen-<UTC timestamp>/     one generation: kb-meta.json (store seq, doc counts) and one directory
        public/              per sub-index (SUBINDEXES), each a complete Whoosh index
        staff/

Audiences are physically separate: `public/` holds the public documents only and `staff/` every
other document (an unknown audience counts as staff), so the two are disjoint and no document is
indexed twice. An anonymous reader opens `public/` alone, so its BM25 statistics, facet values,
word lists for suggestions and corrections, and its timing cannot depend on staff material;
staff readers search both through one Whoosh MultiReader (see kb/search/). Which sub-indexes an
audience opens is decided here, once: `subindex_for`, `subindexes_for`, `subindex_dirs`.
Whether a generation reads as searches read it is kb.search.check's question (`current_generation`).
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from bisect import bisect_right
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from whoosh import formats
from whoosh import index as whoosh_index
from whoosh.fields import DATETIME, ID, KEYWORD, STORED, TEXT, Schema

from kb.models import Article, Hit
from kb.vocab import plain_analyzer, text_analyzer

#: Bump when the schema or the document mapping changes: `update()` then rebuilds instead of mixing.
SCHEMA_VERSION = 3  # 2: one document per near-duplicate group; 3: separate public and staff sub-indexes
POINTER = "CURRENT"
META = "kb-meta.json"
#: Words of the body indexed again as the "lead": pages state their subject up front.
LEAD_WORDS = 15
COMPRESS_LEVEL = 1  # level 6 is ~10% smaller but costs 7% of the build time

PUBLIC_INDEX = "public"
STAFF_INDEX = "staff"
#: The sub-index directories of every generation, public first (the order of commits and of docnums).
SUBINDEXES: tuple[str, ...] = (PUBLIC_INDEX, STAFF_INDEX)


def subindex_for(audience: str | None) -> str:
    """The sub-index a document of `audience` lives in: only "public" is public (when in doubt, staff)."""
    return PUBLIC_INDEX if (audience or "public") == "public" else STAFF_INDEX


def subindexes_for(audiences: Iterable[str]) -> tuple[str, ...]:
    """The sub-indexes a reader allowed `audiences` opens: the public one alone unless it may see more."""
    wanted = {subindex_for(a) for a in audiences} | {PUBLIC_INDEX}
    return tuple(name for name in SUBINDEXES if name in wanted)


def subindex_dirs(generation: Path, names: Iterable[str] = SUBINDEXES) -> dict[str, Path]:
    """Sub-index name -> its Whoosh index directory inside `generation`, in SUBINDEXES order."""
    wanted = set(names)
    return {name: Path(generation) / name for name in SUBINDEXES if name in wanted}


def is_complete(generation: Path) -> bool:
    """Whether every sub-index of `generation` holds a Whoosh index (the current layout)."""
    return all(_holds_index(path) for path in subindex_dirs(generation).values())


def is_legacy(generation: Path) -> bool:
    """Whether `generation` is one index for every audience, as kb built before SCHEMA_VERSION 3."""
    return _holds_index(generation) and not is_complete(generation)


def _holds_index(path: Path) -> bool:
    """Whether `path` holds a Whoosh index whose table of contents reads (a damaged one does not)."""
    try:
        return whoosh_index.exists_in(str(path))
    except Exception:  # an unreadable table of contents: kb.search.check says what is wrong
        return False


def _spell_field() -> TEXT:
    """Unstemmed words for "Did you mean": presence only (no frequencies, no lengths), it is never scored.

    About a third of all postings are spelling postings, so dropping what scoring needs
    speeds the build up by ~10%.
    """
    spell = TEXT(analyzer=plain_analyzer(), phrase=False)
    spell.format = formats.Existence()
    spell.scorable = False
    return spell


def build_schema() -> Schema:
    """The fields of one article; stored fields are kept small (body compressed, no duplicates)."""
    text = text_analyzer()
    return Schema(
        id=ID(unique=True, stored=True, sortable=True),
        url=ID(stored=True),
        title=TEXT(analyzer=text, stored=True),
        title_key=ID(),  # whole normalised title: exact-title ranking and title autocomplete
        headings=TEXT(analyzer=text),
        tagtext=TEXT(analyzer=text),  # tags and categories as words, so query words can rank them
        tags=KEYWORD(commas=True, scorable=True, stored=True),  # exact values for filters and facets
        categories=KEYWORD(commas=True, stored=True),
        lead=TEXT(analyzer=text),
        body=TEXT(analyzer=text),
        spell=_spell_field(),
        site=ID(stored=True),
        audience=ID(stored=True),
        kind=ID(stored=True),
        published=DATETIME(sortable=True),
        pubdate=STORED(),  # the published string as the store has it
        year=ID(),
        sections=STORED(),  # compact JSON [[anchor, heading, start offset in body], ...]
        body_z=STORED(),  # zlib-compressed body for snippets; 3-4x smaller than the text
        hash=ID(sortable=True),  # content hash: `kb check` compares it with the store
        sources=STORED(),  # JSON [{"url", "site", "title"}, ...] of a near-duplicate group, primary first
    )


_SPACE = re.compile(r"\s+")
_NON_WORD = re.compile(r"[\W_]+")


def title_key(text: str) -> str:
    """Normalised whole title (lower case, punctuation folded to single spaces) for exact matching."""
    return _NON_WORD.sub(" ", text.casefold()).strip()


def _clean_values(values: Iterable[str]) -> list[str]:
    """Facet values without the comma separator and blank entries, first spelling of each kept."""
    out: dict[str, str] = {}
    for value in values:
        value = _SPACE.sub(" ", str(value).replace(",", " ")).strip()
        if value and value.casefold() not in out:
            out[value.casefold()] = value
    return list(out.values())


def _parse_date(value: str | None) -> datetime | None:
    """ISO date or datetime (any offset) as naive UTC, or None when it cannot be read."""
    if not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        match = re.match(r"(\d{4})-(\d{2})-(\d{2})", text)
        if not match:
            return None
        try:
            parsed = datetime(int(match[1]), int(match[2]), int(match[3]))
        except ValueError:
            return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed


def section_offsets(article: Article) -> list[list[Any]]:
    """[anchor, heading, start] per section, start being where its text begins in `article.text`.

    Found by searching each section's opening text after the previous one, so a hit's snippet
    position maps back to the section it came from for a `url#anchor` deep link.
    """
    body = article.text
    out: list[list[Any]] = []
    pos = 0
    for section in article.sections:
        start = -1
        for probe in (section.text.strip()[:60], section.heading.strip()):
            if probe:
                start = body.find(probe, pos)
                if start >= 0:
                    break
        if start < 0:
            start = pos
        out.append([section.anchor or "", section.heading or "", start])
        pos = start
    return out


def section_at(sections: list[list[Any]], offset: int) -> tuple[str, str]:
    """(anchor, heading) of the section containing character `offset` of the body."""
    if not sections:
        return "", ""
    starts = [s[2] for s in sections]
    i = bisect_right(starts, offset) - 1
    if i < 0:
        return "", ""
    return sections[i][0], sections[i][1]


def _spell_text(*parts: str) -> str:
    """Each distinct word once: the spelling field needs vocabulary, not frequencies."""
    return " ".join(dict.fromkeys(" ".join(parts).split()))


def lead_text(article: Article) -> str:
    return " ".join(filter(None, [article.description, " ".join(article.text.split()[:LEAD_WORDS])]))


def document_hash(content_hash: str, sources: list[dict[str, str]]) -> str:
    """The article's content hash, extended by its copies' links when it heads a near-duplicate group.

    So `kb check` also sees a document whose list of sources is out of date.
    """
    if not sources:
        return content_hash
    listed = json.dumps(sources, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{content_hash}\x00{listed}".encode("utf-8", "surrogatepass")).hexdigest()


def article_document(article: Article) -> dict[str, Any]:
    """The Whoosh document for one stored article (the store assigned `article.id`)."""
    if article.id is None:
        raise ValueError("article has no id: save it in the store first")
    headings = "\n".join(s.heading for s in article.sections if s.heading)
    tags = _clean_values(article.tags)
    categories = _clean_values(article.categories)
    published = _parse_date(article.published)
    doc: dict[str, Any] = {
        "id": str(article.id),
        "url": article.url,
        "title": article.title,
        "title_key": title_key(article.title),
        "headings": headings,
        "tagtext": " ".join(tags + categories),
        "tags": ",".join(tags),
        "categories": ",".join(categories),
        "lead": lead_text(article),
        "body": article.text,
        "spell": _spell_text(article.title, headings, article.text),
        "site": article.site or "",
        "audience": article.audience or "public",
        "kind": article.kind or "article",
        "pubdate": article.published or "",
        "sections": json.dumps(section_offsets(article), separators=(",", ":"), ensure_ascii=False),
        "body_z": zlib.compress(article.text.encode("utf-8", "surrogatepass"), COMPRESS_LEVEL),
        "hash": document_hash(article.content_hash, article.sources),
    }
    if article.sources:
        doc["sources"] = json.dumps(article.sources, separators=(",", ":"), ensure_ascii=False)
    if published is not None:
        doc["published"] = published
        doc["year"] = str(published.year)
    if not doc["title_key"]:
        del doc["title_key"]
    return doc


def stored_body(stored: Mapping[str, Any]) -> str:
    """The body text of a stored document (`body_z`, compressed by `article_document`), for snippets."""
    return zlib.decompress(stored["body_z"]).decode("utf-8", "surrogatepass") if stored.get("body_z") else ""


def stored_sections(stored: Mapping[str, Any]) -> list[list[Any]]:
    """[anchor, heading, start] per section of a stored document (see `section_offsets`)."""
    return json.loads(stored.get("sections") or "[]")


def stored_hit(stored: Mapping[str, Any], *, score: float, snippet_html: str, anchor: str, section: str) -> Hit:
    """A result from a document's stored fields, the reverse of `article_document`; the snippet is the caller's."""
    return Hit(
        id=int(stored["id"]), url=stored.get("url", ""), title=stored.get("title", ""), snippet_html=snippet_html,
        score=float(score), site=stored.get("site", ""), published=stored.get("pubdate") or None,
        tags=[t for t in (stored.get("tags") or "").split(",") if t],
        categories=[c for c in (stored.get("categories") or "").split(",") if c],
        anchor=anchor, section=section, audience=stored.get("audience", "public"),
        kind=stored.get("kind", "article"), sources=json.loads(stored.get("sources") or "[]"),
    )


def named_generation(index_root: Path) -> Path | None:
    """The directory CURRENT safely names, whether or not it holds a usable index."""
    root = Path(index_root)
    try:  # a damaged pointer (a directory, a link loop, a huge or binary file) names nothing
        with open(root / POINTER, "rb") as fh:
            name = fh.read(256).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not name or "/" in name or "\\" in name or name in {".", ".."}:
        return None
    return root / name


def read_meta(generation: Path) -> dict[str, Any]:
    """A generation's kb-meta.json (store sequence, schema version, counts); empty when missing or unreadable.

    Empty also when it is not what kb writes (not an object, a sequence or schema that is not a whole number):
    callers then treat the generation as one to rebuild, never trip over a field.
    """
    try:
        with open(Path(generation) / META, "rb") as fh:
            meta = json.loads(fh.read(1_000_000))
    except (OSError, ValueError):
        return {}
    if not isinstance(meta, dict) or not all(isinstance(meta.get(key, 0), int) and not isinstance(meta.get(key), bool)
                                             for key in ("seq", "schema", "docs")):
        return {}
    return meta
