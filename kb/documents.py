"""Import local documents (HTML, Markdown, plain text, PDF) into the store, next to crawled articles.

Clinics keep protocols and handouts as files that no crawler can reach. Each file becomes one
kind="document" article under its own `file://` URI, so re-importing finds and updates the same record,
and an unchanged file causes no write at all (the store compares content hashes).

Loading (file -> Article) is kept apart from storing, so every format rule is testable without a store.
A file that cannot be used is a recorded skip with its reason, never a traceback: a corrupt or encrypted
PDF leaves whatever was stored for that URL untouched.
"""

from __future__ import annotations

import codecs
import html
import io
import logging
import os
import re
import statistics
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import click

from kb.errors import ConfigError, KBError, SkipPage
from kb.extract import extract, normalise_date
from kb.models import AUDIENCES, Article, CrawlStats, Section
from kb.store import Store

log = logging.getLogger(__name__)

__all__ = ["SUFFIXES", "DocumentStats", "load_document", "iter_files", "import_paths"]

MAX_BYTES = 20_000_000  # larger files are skipped: they are archives or scans, not handouts
MAX_TITLE = 200
SITE = "local"
KIND = "document"
FORMATS = {
    ".html": "html", ".htm": "html", ".xhtml": "html",
    ".md": "markdown", ".markdown": "markdown",
    ".txt": "text",
    ".pdf": "pdf",
}
SUFFIXES = tuple(FORMATS)
MARKDOWN_EXTENSIONS = ["toc", "tables", "fenced_code", "sane_lists", "def_list", "abbr"]

_FRONT_MATTER_RE = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.S)
_FRONT_KEY_RE = re.compile(r"^([A-Za-z][\w-]*)\s*:\s*(.*?)\s*$")
_PDF_APP_PREFIX_RE = re.compile(r"^Microsoft\s+(?:Word|PowerPoint|Excel)\s+-\s+", re.I)
_FILE_NAME_RE = re.compile(r"\.(?:docx?|pdf|pptx?|rtf|odt|txt|indd|pages|qxd)$", re.I)
_JUNK_TITLES = frozenset({"", "untitled", "title", "document", "no title", "slide 1", "page 1"})
_BULLETS = frozenset("•◦▪▫‣∙●○■□➢►–")


@dataclass
class DocumentStats(CrawlStats):
    """CrawlStats plus every skipped file with its reason, so the CLI can say what to fix."""

    skips: list[dict[str, str]] = field(default_factory=list)

    def record_skip(self, path: Path, exc: SkipPage) -> None:
        self.skipped += 1
        self.errors_by_kind[exc.kind] = self.errors_by_kind.get(exc.kind, 0) + 1
        self.skips.append({"path": str(path), "kind": exc.kind, "reason": exc.message})

    @property
    def added(self) -> int:
        """Files now in the store, whether they were written or already current."""
        return self.new + self.updated + self.unchanged


# ------------------------------------------------------------------------------------------- decoding

def _decode_text(data: bytes, path: Path) -> str:
    """UTF-8 (with or without BOM, or UTF-16 with BOM), else Windows-1252: what text editors write."""
    for bom, name in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                      (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            text = data.decode(name, errors="replace")
            break
    else:
        if b"\x00" in data[:8192]:
            raise SkipPage(f"{path.name} is binary, not text; check the file or rename it with its real suffix",
                           kind="not_text")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("cp1252", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _clean(text: str) -> str:
    return " ".join(text.split())


def _short_title(text: str) -> str:
    text = _clean(text)
    if len(text) <= MAX_TITLE:
        return text
    return text[:MAX_TITLE].rsplit(" ", 1)[0].rstrip(",;:-") + "…"


def _title_from_name(path: Path) -> str:
    words = re.sub(r"[-_+]+", " ", path.stem).strip()
    return words[:1].upper() + words[1:] if words else path.name


# --------------------------------------------------------------------------------------------- formats

def _extract(data: bytes, url: str, path: Path) -> Article:
    """extract(), with its "no main text" skip naming the file rather than its long file:// URL."""
    try:
        return extract(data, url)
    except SkipPage as exc:
        if exc.kind == "empty":
            raise SkipPage(f"{path.name} has no text to index", kind="empty") from None
        raise


def _load_html(data: bytes, url: str, path: Path) -> Article:
    return _extract(data, url, path)


def _front_matter(text: str) -> tuple[dict[str, str], str]:
    """YAML-style `---` front matter as flat `key: value` pairs (the keys static-site generators use)."""
    m = _FRONT_MATTER_RE.match(text)
    if not m:
        return {}, text
    meta: dict[str, str] = {}
    for line in m.group(1).splitlines():
        km = _FRONT_KEY_RE.match(line)
        if km:
            meta[km.group(1).lower()] = km.group(2).strip().strip("\"'")
    return meta, text[m.end():]


def _front_list(value: str) -> list[str]:
    value = value.strip().strip("[]")
    return [v.strip().strip("\"'") for v in value.split(",") if v.strip().strip("\"'")]


def _load_markdown(data: bytes, url: str, path: Path) -> Article:
    import markdown

    meta, source = _front_matter(_decode_text(data, path))
    body = markdown.markdown(source, extensions=MARKDOWN_EXTENSIONS, output_format="html")
    # A <title> is only used when the text has no "# Heading": front matter first, then the file name.
    title = meta.get("title") or _title_from_name(path)
    page = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title></head>"
            f"<body><main>{body}</main></body></html>")
    article = _extract(page.encode("utf-8"), url, path)
    if meta.get("title"):
        article.title = _short_title(meta["title"])
    article.description = meta.get("description", "") or article.description
    article.author = meta.get("author", "") or article.author
    if meta.get("date"):
        article.published = normalise_date(meta["date"]) or article.published
    article.tags = _front_list(meta.get("tags", "")) or article.tags
    article.categories = _front_list(meta.get("categories", "")) or article.categories
    return article


def _paragraphs(text: str) -> list[str]:
    return [_clean(p) for p in re.split(r"\n[ \t]*\n", text) if _clean(p)]


def _load_text(data: bytes, url: str, path: Path) -> Article:
    text = _decode_text(data, path)
    lines = [line.strip() for line in text.split("\n")]
    first = next((i for i, line in enumerate(lines) if line), None)
    if first is None:
        raise SkipPage(f"{path.name} has no text", kind="empty")
    title = _short_title(lines[first])
    # The title line is shown apart from the body (as extract() does with an <h1>) unless it is all there is.
    rest = "\n".join(lines[first + 1:])
    paragraphs = _paragraphs(rest) or [_clean(lines[first])]
    body = "\n\n".join(paragraphs)
    return Article(url=url, title=title, text=body, canonical=url,
                   sections=[Section(heading="", anchor="", text=body, level=0)])


def _pdf_lines_to_paragraphs(page_text: str) -> list[str]:
    """pypdf gives one line per text line: rejoin lines into paragraphs, undoing end-of-line hyphenation.

    A blank line ends a paragraph; so does a line much shorter than the page's typical full line
    (a heading, or the last line of a paragraph); a bullet starts one.
    """
    lines = [_clean(line) for line in page_text.split("\n")]
    lengths = [len(line) for line in lines if len(line) > 20]
    full = statistics.median(lengths) if lengths else 0
    paragraphs: list[str] = []
    current = ""
    for line in lines:
        if not line:
            if current:
                paragraphs.append(current)
                current = ""
            continue
        if current and line[:1] in _BULLETS:  # each list item on its own
            paragraphs.append(current)
            current = ""
        if current.endswith("-") and current[-2:-1].isalpha() and line[:1].islower():
            current = current[:-1] + line
        else:
            current = f"{current} {line}" if current else line
        if full and len(line) < 0.6 * full and not line.endswith("-"):
            paragraphs.append(current)
            current = ""
    if current:
        paragraphs.append(current)
    return paragraphs


def _scrub(text: str) -> str:
    """PDF text can hold NULs and lone surrogates (broken font maps), which SQLite cannot store as text."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _pdf_title(raw: object) -> str:
    """The /Title entry when it names the document (not "Microsoft Word - draft3.docx" or "Untitled")."""
    if not isinstance(raw, str):
        return ""
    title = _FILE_NAME_RE.sub("", _PDF_APP_PREFIX_RE.sub("", _clean(_scrub(raw)))).strip()
    return "" if title.lower() in _JUNK_TITLES else _short_title(title)


def _pdf_date(reader: object, attr: str) -> str | None:
    try:
        value = getattr(reader.metadata, attr) if reader.metadata is not None else None  # type: ignore[attr-defined]
    except Exception:  # pypdf raises ValueError and others for malformed dates; a date is optional
        return None
    return value.isoformat(timespec="seconds") if isinstance(value, datetime) else None


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Hide a library's repair chatter ("EOF marker not found"): our skip reason is what the user needs."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _load_pdf(data: bytes, url: str, path: Path) -> Article:
    import pypdf
    from pypdf.errors import DependencyError, FileNotDecryptedError

    # pypdf raises many exception types on damaged files (PdfReadError, ValueError, KeyError, ...);
    # any of them means "this file cannot be read", which is a skip, not a crash.
    try:
        with warnings.catch_warnings(), _quiet("pypdf"):
            warnings.simplefilter("ignore")
            reader = pypdf.PdfReader(io.BytesIO(data))
            if reader.is_encrypted:
                try:
                    opened = reader.decrypt("")  # many PDFs are "encrypted" only to restrict printing
                except (DependencyError, NotImplementedError) as exc:
                    raise SkipPage(f"{path.name} is encrypted in a way that cannot be read here ({exc})",
                                   kind="encrypted") from None
                if not opened:
                    raise SkipPage(f"{path.name} is password-protected; save an unprotected copy and add that",
                                   kind="encrypted")
            pages = [_scrub(page.extract_text() or "") for page in reader.pages]
            info_title = reader.metadata.get("/Title") if reader.metadata is not None else None
            author = reader.metadata.get("/Author") if reader.metadata is not None else None
    except SkipPage:
        raise
    except FileNotDecryptedError:
        raise SkipPage(f"{path.name} is password-protected; save an unprotected copy and add that",
                       kind="encrypted") from None
    except Exception as exc:
        log.debug("cannot read PDF %s", path, exc_info=True)
        raise SkipPage(f"{path.name} is not a readable PDF ({type(exc).__name__}: {exc}); "
                       "re-save or re-export it", kind="corrupt") from None
    sections: list[Section] = []
    for number, page_text in enumerate(pages, 1):
        paragraphs = _pdf_lines_to_paragraphs(page_text)
        if paragraphs:
            # `#page=N` is the PDF open parameter browsers honour, so a hit links to its page.
            sections.append(Section(heading=f"Page {number}", anchor=f"page={number}",
                                    text="\n\n".join(paragraphs), level=2))
    if not sections:
        raise SkipPage(f"{path.name} has no text layer (a scanned PDF?); run OCR on it first", kind="empty")
    title = _pdf_title(info_title) or _short_title(sections[0].text.split("\n\n", 1)[0])
    return Article(
        url=url, title=title, text="\n\n".join(s.text for s in sections), sections=sections, canonical=url,
        author=_clean(_scrub(author)) if isinstance(author, str) else "",
        published=_pdf_date(reader, "creation_date"), modified=_pdf_date(reader, "modification_date"),
    )


_LOADERS: dict[str, Callable[[bytes, str, Path], Article]] = {
    "html": _load_html, "markdown": _load_markdown, "text": _load_text, "pdf": _load_pdf,
}


def load_document(path: Path, *, audience: str = "staff", title: str | None = None,
                  max_bytes: int = MAX_BYTES) -> Article:
    """The storable article of one local file, or SkipPage saying why there is none."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise SkipPage(f"{path.name}: unsupported file type {path.suffix or '(no suffix)'!r}; "
                       f"kb adds {', '.join(SUFFIXES)}", kind="type")
    try:
        if not path.is_file():  # a FIFO or device would block or never end
            raise SkipPage(f"{path.name} is not a regular file", kind="unreadable")
        size = path.stat().st_size
        if size > max_bytes:
            raise SkipPage(f"{path.name} is too large ({size:,} bytes, limit {max_bytes:,})", kind="too_large")
        data = path.read_bytes()
    except OSError as exc:
        raise SkipPage(f"{path.name} cannot be read: {exc.strerror or exc}", kind="unreadable") from None
    url = path.resolve().as_uri()
    article = _LOADERS[fmt](data, url, path)
    article.url = url
    article.canonical = url
    article.site = SITE
    article.kind = KIND
    article.audience = audience
    if title:
        article.title = _short_title(title)
    article.title = article.title or _title_from_name(path)
    return article


# ----------------------------------------------------------------------------------------------- import

def _hidden(name: str) -> bool:
    return name.startswith(".")


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Each named file, and every non-hidden file under each named directory, sorted; each file once."""
    seen: set[Path] = set()

    def once(p: Path) -> Iterator[Path]:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            yield p

    for path in map(Path, paths):
        if not path.is_dir():
            yield from once(path)
            continue
        found: list[Path] = []
        for root, dirs, files in os.walk(path):  # symlinked directories are not followed: no loops
            dirs[:] = [d for d in dirs if not _hidden(d)]
            found += [Path(root) / name for name in files if not _hidden(name)]
        # Sorted as a file manager lists a tree, so progress and reports read in a predictable order.
        for file in sorted(found, key=lambda p: p.relative_to(path).parts):
            yield from once(file)


def import_paths(paths: Iterable[Path], store: Store, *, audience: str = "staff", title: str | None = None,
                 progress: Callable[[str], None] | None = None, max_bytes: int = MAX_BYTES) -> DocumentStats:
    """Import files and directory trees as kind="document" articles; returns a DocumentStats."""
    if audience not in AUDIENCES:
        raise ConfigError(f"Unknown audience {audience!r}.", f"Use one of: {', '.join(AUDIENCES)}.")
    files = list(iter_files(paths))
    if title and len(files) > 1:
        raise ConfigError(f"--title names one document, but {len(files)} files were given.",
                          "Add the files one at a time to give each a title, or leave --title out.")
    stats = DocumentStats()
    say = progress or (lambda message: None)
    for path in files:
        if not path.exists():
            exc = SkipPage(f"{path} does not exist", kind="not_found")
        else:
            try:
                article = load_document(path, audience=audience, title=title, max_bytes=max_bytes)
            except SkipPage as skip:
                exc = skip
            except Exception as err:  # an extractor bug must not abort the other files
                log.debug("cannot import %s", path, exc_info=True)
                exc = SkipPage(f"{path.name} could not be imported ({type(err).__name__}: {err})",
                               kind="internal")
            else:
                _, status = store.save_article(article, source=f"file:{path.resolve().parent}")
                setattr(stats, status, getattr(stats, status) + 1)
                say(f"{status}: {path}")
                continue
        stats.record_skip(path, exc)
        log.info("skipped %s: %s", path, exc.message)
        say(f"skipped ({exc.kind}): {path}")
    return stats
