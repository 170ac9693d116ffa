"""Import local documents (HTML, Markdown, plain text, PDF) into the store, next to crawled articles.

Clinics keep protocols and handouts as files that no crawler can reach. Each file becomes one
kind="document" article under its own `file://` URI, so re-importing finds and updates the same record,
and an unchanged file causes no write at all (the store compares content hashes).

Loading (file -> Article) is kept apart from storing, so every format rule is testable without a store.
A file that cannot be used is a recorded skip with its reason, never a traceback: a corrupt or encrypted
PDF leaves whatever was stored for that URL untouched.

Files are untrusted input. Reading one (PDF text extraction above all: a 16 KB PDF can hold a content
stream that costs pypdf minutes) runs in a separate process with a capped address space that is killed
after IMPORT_TIMEOUT seconds, so one file costs bounded time and memory and the others are still
imported. A directory walk never follows a link out of the named tree, and nothing is ever read from
kb's own data directory (the secret key, the store), not even through a hard link.
"""

from __future__ import annotations

import codecs
import html
import importlib
import io
import logging
import multiprocessing
import os
import re
import statistics
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from kb.config import DEFAULTS
from kb.errors import ConfigError, SkipPage
from kb.extract import extract
from kb.extract.metadata import normalise_date
from kb.models import AUDIENCES, Article, CrawlStats, Section
from kb.store import Store
from kb.text import paragraphs

log = logging.getLogger(__name__)

__all__ = ["SUFFIXES", "DocumentStats", "load_document", "iter_files", "import_paths"]

MAX_BYTES = 20_000_000  # larger files are skipped: they are archives or scans, not handouts
TIMEOUT = float(DEFAULTS["IMPORT_TIMEOUT"])
MAX_TIMEOUT = 86_400
READER_MEMORY = 2 << 30  # address space of the reading process: a decompression bomb ends in MemoryError
READER_START = 60.0  # seconds the reading process may take to start (not part of any file's time limit)
READY = "ready"
_LAZY_IMPORTS = ("markdown", "pypdf")  # what the loaders import on first use
_WARM_UP = {
    "html": b"<html><head><title>Acne</title></head><body><nav>Home</nav><main><h1>Acne</h1>"
            b"<p>Adapalene gel at night.</p></main><footer>Clinic</footer></body></html>",
    "markdown": b"---\ntitle: Acne\n---\n# Acne\n\nAdapalene gel at *night*.\n",
}
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
    return [_clean(p) for p in paragraphs(text) if _clean(p)]


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
Reader = Callable[[str, bytes, str, Path], Article]  # (format, file bytes, url, path) -> Article


def _convert(fmt: str, data: bytes, url: str, path: Path) -> Article:
    """Run the format's loader here, in this process, with no time limit (what the reading process calls)."""
    return _LOADERS[fmt](data, url, path)


# ----------------------------------------------------------------------------------- the reading process

def _outcome(fmt: str, data: bytes, url: str, name: str) -> tuple[Any, ...]:
    """One loader's result in picklable terms: ("article", a), ("skip", kind, reason) or ("error", type, text).

    SkipPage itself would lose its `kind` on the way through a pipe (exceptions pickle their args only).
    """
    path = Path(name)
    try:
        return ("article", _convert(fmt, data, url, path))
    except SkipPage as exc:
        return ("skip", exc.kind, exc.message)
    except MemoryError:
        return ("skip", "too_large", f"{path.name} needs more than {READER_MEMORY >> 20} MB of memory to read")
    except Exception as exc:  # an extractor bug must not end the reading process
        return ("error", type(exc).__name__, str(exc))


def _limit_memory(limit: int) -> None:
    """Cap this process's address space where the OS allows it (Linux, BSD); elsewhere only time is bounded."""
    try:
        import resource
    except ImportError:  # Windows
        return
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    except (ValueError, OSError) as exc:  # macOS refuses RLIMIT_AS
        log.debug("reading process runs without a memory cap: %s", exc)


def _warm_up() -> None:
    """Import and compile what the loaders set up on first use (CSS selectors, regular expressions: 0.1 to
    0.6 s), so that a file's time limit measures reading that file, not starting the process."""
    for name in _LAZY_IMPORTS:
        importlib.import_module(name)
    for fmt, data in _WARM_UP.items():
        try:
            _convert(fmt, data, "file:///kb-warm-up", Path(f"kb-warm-up.{fmt}"))
        except SkipPage:
            pass


def _serve(conn: Connection) -> None:
    """The reading process: (format, bytes, url, path) in, an outcome out, until the pipe closes."""
    _limit_memory(READER_MEMORY)
    _warm_up()
    conn.send(READY)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(_outcome(*job))


def _context() -> Any:
    """forkserver where there is one: a fresh fork of a clean, single-threaded process with kb preloaded
    (forking the caller, which may run threads, is unsafe; spawning costs a new interpreter per start)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__, *_LAZY_IMPORTS])
    return ctx


class ProcessReader:
    """Reads documents in one separate process, reused from file to file, killed and replaced when a file
    takes longer than `timeout` seconds or the process dies; use it as a context manager."""

    def __init__(self, timeout: float = TIMEOUT) -> None:
        try:
            self.timeout = float(timeout)
        except (TypeError, ValueError):
            self.timeout = float("nan")
        if not 0 < self.timeout <= MAX_TIMEOUT:
            raise ConfigError(f"Setting IMPORT_TIMEOUT={timeout!r} must be more than 0 and at most {MAX_TIMEOUT:,} "
                              "seconds.", f"Use a number of seconds, e.g. {TIMEOUT:g}.")
        self._process: Any = None
        self._conn: Connection | None = None

    def __enter__(self) -> "ProcessReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, fmt: str, data: bytes, url: str, path: Path) -> Article:
        """The article of one file, or SkipPage: timed out, the process died, or the loader's own reason."""
        try:
            conn = self._connection()
            conn.send((fmt, data, url, str(path)))
            if not conn.poll(self.timeout):
                self._stop()
                raise SkipPage(f"{path.name} took longer than {self.timeout:g} s to read and was stopped (a damaged "
                               "or hostile file?); if it is a genuine large document, raise IMPORT_TIMEOUT",
                               kind="timeout")
            outcome = conn.recv()
        except (EOFError, OSError):
            code = self._stop()
            raise SkipPage(f"{path.name} ended the reading process (exit code {code}); check the file or re-save it",
                           kind="crashed") from None
        return _article(outcome, path)

    def _connection(self) -> Connection:
        """The pipe to a reading process that is up and ready, started if need be."""
        if self._process is None or not self._process.is_alive():
            self._stop()
            ctx = _context()
            ours, theirs = ctx.Pipe()
            self._process = ctx.Process(target=_serve, args=(theirs,), name="kb-add-reader", daemon=True)
            self._process.start()
            theirs.close()
            self._conn = ours
            if not ours.poll(READER_START) or ours.recv() != READY:
                raise EOFError("the reading process did not start")
        assert self._conn is not None
        return self._conn

    def _stop(self) -> int | None:
        """Kill the reading process (by its own handle) and return its exit code."""
        process, self._process = self._process, None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if process is None:
            return None
        if process.is_alive():
            process.kill()
        process.join(5)
        code = process.exitcode
        process.close()
        return code

    def close(self) -> None:
        """Let the process end on its own (the pipe closes), then make sure it has."""
        process = self._process
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if process is not None:
            process.join(2)
        self._stop()


def _article(outcome: tuple[Any, ...], path: Path) -> Article:
    """Turn the reading process's outcome back into an Article or a SkipPage."""
    if outcome[0] == "article":
        return outcome[1]
    if outcome[0] == "skip":
        raise SkipPage(outcome[2], kind=outcome[1])
    raise SkipPage(f"{path.name} could not be imported ({outcome[1]}: {outcome[2]})", kind="internal")


# ----------------------------------------------------------------------------------------------- loading

def load_document(path: Path, *, audience: str = "staff", title: str | None = None,
                  max_bytes: int = MAX_BYTES, reader: Reader | None = None) -> Article:
    """The storable article of one local file, or SkipPage saying why there is none.

    `reader` runs the format's loader (a ProcessReader bounds its time and memory); by default it runs here.
    """
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
    article = (reader or _convert)(fmt, data, url, path)
    article.url = url
    article.canonical = url
    article.site = SITE
    article.kind = KIND
    article.audience = audience
    if title:
        article.title = _short_title(title)
    article.title = article.title or _title_from_name(path)
    return article


# ----------------------------------------------------------------------------------------------- walking

def _hidden(name: str) -> bool:
    return name.startswith(".")


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


@dataclass(frozen=True)
class _DataDir:
    """kb's own data directory (secret key, store, settings): never imported, whatever path leads to it."""

    root: Path | None = None
    files: frozenset[tuple[int, int]] = frozenset()  # (device, inode) of its files: hard links lead here too

    @classmethod
    def at(cls, path: Path | None) -> "_DataDir":
        if path is None:
            return cls()
        root = Path(path).resolve()
        try:
            files = frozenset((st.st_dev, st.st_ino) for entry in os.scandir(root)
                              if entry.is_file(follow_symlinks=False) and (st := entry.stat()))
        except OSError:
            files = frozenset()
        return cls(root, files)

    def holds(self, resolved: Path) -> bool:
        return self.root is not None and _inside(resolved, self.root)

    def shares_file(self, path: Path) -> bool:
        try:
            st = path.stat()
        except OSError:
            return False
        return (st.st_dev, st.st_ino) in self.files

    def refusal(self, path: Path) -> SkipPage:
        return SkipPage(f"{path} is kb's own data (the data directory {self.root}: secret key, store, settings), "
                        "which is never imported", kind="data_dir")


def _outside(link: Path, target: Path, tree: Path, what: str = "") -> SkipPage:
    return SkipPage(f"{link.name} is a link to {what}{target}, outside {tree}; kb add does not follow links out of "
                    "the folder it is given (add the target itself if it belongs in the knowledge base)",
                    kind="link_outside")


def _walk(tree: Path, real_tree: Path, data: _DataDir) -> Iterator[tuple[Path, SkipPage | None]]:
    """Every non-hidden file under `tree`, sorted as a file manager lists it; links that lead out of the
    tree and copies of kb's data come with the reason they are not read."""
    found: list[tuple[Path, SkipPage | None]] = []
    for root, dirs, files in os.walk(tree):  # symlinked directories are listed but not entered: no loops
        here = Path(root)
        dirs[:] = [d for d in dirs if not _hidden(d)]
        for name in dirs:
            if (here / name).is_symlink():
                target = (here / name).resolve()
                if not _inside(target, real_tree):  # one inside the tree adds nothing: its files are walked
                    found.append((here / name, _outside(here / name, target, tree, "the folder ")))
        for name in files:
            if _hidden(name):
                continue
            path = here / name
            target = path.resolve()
            if not _inside(target, real_tree):
                found.append((path, _outside(path, target, tree)))
            elif data.holds(target) or data.shares_file(path):
                found.append((path, data.refusal(path)))
            else:
                found.append((path, None))
    found.sort(key=lambda item: item[0].relative_to(tree).parts)
    yield from found


def _named(path: Path, data: _DataDir) -> Iterator[tuple[Path, SkipPage | None]]:
    """The files one command-line path stands for, each with the reason it is refused (None: read it)."""
    real = path.resolve()
    if data.holds(real) or (not path.is_dir() and data.shares_file(path)):
        yield path, data.refusal(path)
    elif not path.is_dir():
        yield path, None
    elif data.root is not None and _inside(data.root, real):
        yield path, SkipPage(f"{path} contains kb's data directory ({data.root}: secret key, store, settings), "
                             "which is never imported; name the document folders inside it instead",
                             kind="data_dir")
    else:
        yield from _walk(path, real, data)


def iter_files(paths: Iterable[Path], data_dir: Path | None = None) -> Iterator[tuple[Path, SkipPage | None]]:
    """Each named file, and every non-hidden file under each named directory, sorted; each file once.

    A file that must not be read comes with its SkipPage: a link out of the named directory, or anything
    in (or hard-linked from) kb's data directory `data_dir`.
    """
    data = _DataDir.at(data_dir)
    seen: set[Path] = set()
    for path in map(Path, paths):
        for file, refusal in _named(path, data):
            key = file.absolute() if refusal else file.resolve()  # a link and its target are one document
            if key not in seen:
                seen.add(key)
                yield file, refusal


# ----------------------------------------------------------------------------------------------- import

def _store_dir(store: Store) -> Path | None:
    return None if str(store.path) == ":memory:" else Path(store.path).resolve().parent


def import_paths(paths: Iterable[Path], store: Store, *, audience: str = "staff", title: str | None = None,
                 progress: Callable[[str], None] | None = None, max_bytes: int = MAX_BYTES,
                 timeout: float | None = TIMEOUT, data_dir: Path | None = None) -> DocumentStats:
    """Import files and directory trees as kind="document" articles; returns a DocumentStats.

    Each file is read in a separate process stopped after `timeout` seconds (None: read here, unbounded,
    for trusted callers). `data_dir` is never read from; by default it is the directory of the store.
    """
    if audience not in AUDIENCES:
        raise ConfigError(f"Unknown audience {audience!r}.", f"Use one of: {', '.join(AUDIENCES)}.")
    files = list(iter_files(paths, data_dir if data_dir is not None else _store_dir(store)))
    if title and len(files) > 1:
        raise ConfigError(f"--title names one document, but {len(files)} files were given.",
                          "Add the files one at a time to give each a title, or leave --title out.")
    stats = DocumentStats()
    say = progress or (lambda message: None)
    readers = ProcessReader(timeout) if timeout is not None else _in_process()
    with readers as reader:
        for path, refusal in files:
            try:
                if refusal is not None:
                    raise refusal
                status = _import_one(path, store, audience=audience, title=title, max_bytes=max_bytes, reader=reader)
            except SkipPage as exc:
                stats.record_skip(path, exc)
                log.info("skipped %s: %s", path, exc.message)
                say(f"skipped ({exc.kind}): {path}")
                continue
            setattr(stats, status, getattr(stats, status) + 1)
            say(f"{status}: {path}")
    return stats


@contextmanager
def _in_process() -> Iterator[Reader]:
    yield _convert


def _import_one(path: Path, store: Store, **options: Any) -> str:
    """Load and store one file; returns the store's status (new, updated, unchanged) or raises SkipPage."""
    if not path.exists():
        raise SkipPage(f"{path} does not exist", kind="not_found")
    try:
        article = load_document(path, **options)
    except SkipPage:
        raise
    except Exception as err:  # an extractor bug must not abort the other files
        log.debug("cannot import %s", path, exc_info=True)
        raise SkipPage(f"{path.name} could not be imported ({type(err).__name__}: {err})", kind="internal") from None
    _, status = store.save_article(article, source=f"file:{path.resolve().parent}")
    return status
