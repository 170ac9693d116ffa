"""Local documents: `kb add PATH...` imports HTML, Markdown, text and PDF files as kind="document" articles."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pypdf
import pytest

from kb.documents import DocumentStats, import_paths, load_document
from kb.errors import ConfigError, SkipPage

DOCS = Path(__file__).parent / "data" / "docs"


# ------------------------------------------------------------------------------------------ PDF builder

def _pdf_string(text: str) -> str:
    return "(" + text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def make_pdf(pages: list[list[str]], info: dict[str, str] | None = None) -> bytes:
    """A minimal valid PDF: one Helvetica text line per entry, real xref offsets, optional /Info."""
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    }
    kids, num = [], 4
    for lines in pages:
        ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"] + [f"{_pdf_string(line)} Tj T*" for line in lines] + ["ET"]
        stream = "\n".join(ops).encode("latin-1")
        objects[num] = (f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                        f"/Resources << /Font << /F1 3 0 R >> >> /Contents {num + 1} 0 R >>").encode()
        objects[num + 1] = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream)
        kids.append(f"{num} 0 R")
        num += 2
    objects[2] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>".encode()
    trailer_info = ""
    if info:
        objects[num] = ("<< " + " ".join(f"/{k} {_pdf_string(v)}" for k, v in info.items()) + " >>").encode("latin-1")
        trailer_info = f" /Info {num} 0 R"
        num += 1
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for i in range(1, num):
        offsets[i] = len(out)
        out += f"{i} 0 obj\n".encode() + objects[i] + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {num}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offsets[i]:010d} 00000 n \n".encode() for i in range(1, num))
    out += f"trailer\n<< /Size {num} /Root 1 0 R{trailer_info} >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


PDF_PAGES = [
    ["Laser hair removal", "",
     "Lasers target melanin in the hair follicle, so dark hair on pale skin responds best to the",
     "treatment; several sessions are needed because only growing hairs are affected by each pul-",
     "se of light.", "",
     "Shave the area the day before."],
    ["Aftercare", "", "Avoid sun exposure and tanning for two weeks after each laser session, and use",
     "a sunscreen with SPF 50."],
]


def encrypt(data: bytes, user_password: str) -> bytes:
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="RC4-128")
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    """A copy of the test documents, so tests can change and add files."""
    target = tmp_path / "docs"
    shutil.copytree(DOCS, target)
    return target


@pytest.fixture
def pdf(docs: Path) -> Path:
    path = docs / "laser-hair-removal.pdf"
    path.write_bytes(make_pdf(PDF_PAGES, {"Title": "Laser hair removal: a guide", "Author": "Dr A. Smith",
                                          "CreationDate": "D:20240102030405Z"}))
    return path


def test_pdf_builder_makes_a_pdf_pypdf_reads_strictly() -> None:
    reader = pypdf.PdfReader(io.BytesIO(make_pdf(PDF_PAGES, {"Title": "T"})), strict=True)
    assert len(reader.pages) == 2
    assert reader.metadata.title == "T"
    assert "Aftercare" in reader.pages[1].extract_text()


# ----------------------------------------------------------------------------------------------- formats

def test_html_file(docs: Path, store) -> None:
    path = docs / "rosacea-handout.html"
    stats = import_paths([path], store)
    assert (stats.new, stats.skipped) == (1, 0)
    article = store.get_article_by_url(path.resolve().as_uri())
    assert article.url.startswith("file:///") and article.url.endswith("/rosacea-handout.html")
    assert article.title == "Rosacea: what patients should know"
    assert (article.kind, article.site, article.audience) == ("document", "local", "staff")
    assert "pulsed dye laser" in article.text
    assert "Handouts" not in article.text and "Copyright" not in article.text  # nav and footer dropped
    assert [(s.heading, s.anchor) for s in article.sections if s.heading] == [
        ("Common triggers", "triggers"), ("Treatment options", "treatment")]
    assert store.article_source(article.id) == f"file:{docs.resolve()}"


def test_markdown_headings_become_sections_with_anchors(docs: Path, store) -> None:
    path = docs / "acne-protocol.md"
    import_paths([path], store)
    article = store.get_article_by_url(path.resolve().as_uri())
    assert article.title == "Acne treatment protocol"
    assert article.kind == "document" and article.site == "local"
    assert [(s.heading, s.anchor, s.level) for s in article.sections if s.heading] == [
        ("Topical retinoids", "topical-retinoids", 2), ("When to refer", "when-to-refer", 2)]
    refer = next(s for s in article.sections if s.anchor == "when-to-refer")
    assert "isotretinoin" in refer.text
    assert not article.text.startswith("Acne treatment protocol")  # the title is not repeated as text


def test_markdown_front_matter_and_title_fallback(tmp_path: Path) -> None:
    fm = tmp_path / "eczema.md"
    fm.write_text("---\ntitle: \"Eczema: clinic guide\"\nauthor: Dr B\ndate: 2023-05-04\ntags: [eczema, emollients]\n"
                  "---\n\nEmollients are the basis of eczema care, applied generously and often every day.\n",
                  encoding="utf-8")
    article = load_document(fm)
    assert article.title == "Eczema: clinic guide"
    assert (article.author, article.published, article.tags) == ("Dr B", "2023-05-04", ["eczema", "emollients"])
    assert "title:" not in article.text and article.text.startswith("Emollients")

    plain = tmp_path / "wart_treatment-notes.md"
    plain.write_text("Cryotherapy with liquid nitrogen clears most common warts within a few sessions.\n",
                     encoding="utf-8")
    assert load_document(plain).title == "Wart treatment notes"


def test_text_file_title_and_paragraphs(docs: Path, store) -> None:
    path = docs / "laser-aftercare.txt"
    import_paths([path], store, audience="public")
    article = store.get_article_by_url(path.resolve().as_uri())
    assert article.title == "Laser aftercare instructions"
    assert article.audience == "public" and article.kind == "document"
    assert article.text.split("\n\n") == [
        "Keep the treated area clean and dry for 24 hours, and avoid make-up on it.",
        "Use a broad-spectrum sunscreen of SPF 50 every day for at least four weeks after treatment.",
    ]


def test_text_file_in_windows_1252_and_binary_text(tmp_path: Path) -> None:
    legacy = tmp_path / "notes.txt"
    legacy.write_bytes("Caf\xe9 au lait macules\n\nSmooth, \u201ccoffee\u201d-coloured patches.\n".encode("cp1252"))
    article = load_document(legacy)
    assert article.title == "Café au lait macules"
    assert "\u201ccoffee\u201d" in article.text
    binary = tmp_path / "image.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(SkipPage) as info:
        load_document(binary)
    assert info.value.kind == "not_text" and "image.txt" in info.value.message


def test_pdf_file(pdf: Path, store) -> None:
    stats = import_paths([pdf], store)
    assert stats.new == 1
    article = store.get_article_by_url(pdf.resolve().as_uri())
    assert article.title == "Laser hair removal: a guide"  # from the /Title entry
    assert (article.kind, article.site, article.audience) == ("document", "local", "staff")
    assert article.author == "Dr A. Smith"
    assert article.published == "2024-01-02T03:04:05+00:00"
    assert [(s.heading, s.anchor) for s in article.sections] == [("Page 1", "page=1"), ("Page 2", "page=2")]
    assert "each pulse of light." in article.text  # end-of-line hyphenation undone
    assert "Aftercare" in article.sections[1].text and "SPF 50" in article.sections[1].text
    assert "Shave the area the day before." in article.text.split("\n\n")


def test_pdf_lines_rejoin_into_paragraphs() -> None:
    from kb.documents import _pdf_lines_to_paragraphs

    text = ("Treatment options for chronic plaque psoriasis include\ntopical steroids and vitamin D ana-\n"
            "logues.\n• Phototherapy with narrowband UVB\n• Methotrexate\n\nBiologics follow.")
    assert _pdf_lines_to_paragraphs(text) == [
        "Treatment options for chronic plaque psoriasis include topical steroids and vitamin D analogues.",
        "• Phototherapy with narrowband UVB", "• Methotrexate", "Biologics follow."]


def test_pdf_text_is_made_storable(store) -> None:
    from kb.documents import _scrub
    from kb.models import Article

    text = _scrub("Broken font map: a\ud800b\x00c")  # lone surrogates make SQLite raise UnicodeEncodeError
    assert text == "Broken font map: a?bc"
    store.save_article(Article(url="file:///x.pdf", title="x", text=text))


def test_pdf_title_falls_back_to_first_line_and_skips_junk_titles(tmp_path: Path) -> None:
    bare = tmp_path / "bare.pdf"
    bare.write_bytes(make_pdf(PDF_PAGES))
    assert load_document(bare).title == "Laser hair removal"
    junk = tmp_path / "junk.pdf"
    junk.write_bytes(make_pdf(PDF_PAGES, {"Title": "Microsoft Word - draft3.docx"}))
    assert load_document(junk).title == "draft3"
    untitled = tmp_path / "untitled.pdf"
    untitled.write_bytes(make_pdf(PDF_PAGES, {"Title": "Untitled"}))
    assert load_document(untitled).title == "Laser hair removal"


def test_pdf_without_text_layer_is_skipped(tmp_path: Path) -> None:
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(make_pdf([[]]))
    with pytest.raises(SkipPage) as info:
        load_document(scan)
    assert info.value.kind == "empty" and "OCR" in info.value.message


@pytest.mark.parametrize("damage", [
    lambda data: data[: len(data) // 2],
    lambda data: b"%PDF-1.4 this is not really a pdf",
    lambda data: b"",
])
def test_corrupt_pdf_is_skipped_with_a_reason(tmp_path: Path, store, damage) -> None:
    path = tmp_path / "broken.pdf"
    path.write_bytes(damage(make_pdf(PDF_PAGES)))
    stats = import_paths([path], store)
    assert (stats.new, stats.skipped, stats.errors_by_kind) == (0, 1, {"corrupt": 1})
    assert stats.skips[0]["path"] == str(path)
    assert "broken.pdf is not a readable PDF" in stats.skips[0]["reason"]
    assert store.count_articles() == 0


def test_encrypted_pdf(tmp_path: Path) -> None:
    locked = tmp_path / "locked.pdf"
    locked.write_bytes(encrypt(make_pdf(PDF_PAGES), user_password="secret"))
    with pytest.raises(SkipPage) as info:
        load_document(locked)
    assert info.value.kind == "encrypted" and "password-protected" in info.value.message
    # Encrypted only to restrict editing (empty user password): readable, so imported.
    restricted = tmp_path / "restricted.pdf"
    restricted.write_bytes(encrypt(make_pdf(PDF_PAGES), user_password=""))
    assert "Aftercare" in load_document(restricted).text


def test_unknown_suffix_is_skipped_with_a_reason(tmp_path: Path, store) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0")
    stats = import_paths([path], store)
    assert (stats.skipped, stats.errors_by_kind) == (1, {"type": 1})
    assert "unsupported file type '.jpg'" in stats.skips[0]["reason"] and ".pdf" in stats.skips[0]["reason"]
    assert store.count_articles() == 0


def test_empty_html_too_large_unreadable_and_missing(tmp_path: Path, store, monkeypatch) -> None:
    empty = tmp_path / "empty.html"
    empty.write_text("<html><body><nav><a href='/'>Home</a></nav></body></html>", encoding="utf-8")
    big = tmp_path / "big.txt"
    big.write_text("Big file\n\n" + "word " * 100, encoding="utf-8")
    locked = tmp_path / "locked.md"
    locked.write_text("# Locked\n\nSome text that cannot be read.\n", encoding="utf-8")
    real_read = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.name == "locked.md":
            raise PermissionError(13, "Permission denied")
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    stats = import_paths([empty, big, locked, tmp_path / "gone.txt"], store, max_bytes=300)
    reasons = {Path(s["path"]).name: (s["kind"], s["reason"]) for s in stats.skips}
    assert reasons["empty.html"] == ("empty", "empty.html has no text to index")
    assert reasons["big.txt"][0] == "too_large" and "limit 300" in reasons["big.txt"][1]
    assert reasons["locked.md"] == ("unreadable", "locked.md cannot be read: Permission denied")
    assert reasons["gone.txt"][0] == "not_found"
    assert stats.skipped == 4 and store.count_articles() == 0


def test_extractor_failure_is_a_skip_not_a_crash(docs: Path, store, monkeypatch) -> None:
    import kb.documents

    def broken(data: bytes, url: str, path: Path):
        raise RuntimeError("boom")

    monkeypatch.setitem(kb.documents._LOADERS, "html", broken)
    stats = import_paths([docs], store)
    assert stats.errors_by_kind == {"internal": 1} and "RuntimeError: boom" in stats.skips[0]["reason"]
    assert stats.new == 2  # the other files were still imported


# ------------------------------------------------------------------------------------------ import rules

def test_reimport_unchanged_writes_nothing_and_changes_update(docs: Path, pdf: Path, store) -> None:
    first = import_paths([docs], store)
    assert (first.new, first.updated, first.unchanged, first.skipped) == (4, 0, 0, 0)
    seq = store.last_change()
    again = import_paths([docs], store)
    assert (again.new, again.updated, again.unchanged) == (0, 0, 4)
    assert store.last_change() == seq

    txt = docs / "laser-aftercare.txt"
    txt.write_text(txt.read_text("utf-8") + "\nCall the clinic if blisters appear.\n", encoding="utf-8")
    changed = import_paths([docs], store)
    assert (changed.new, changed.updated, changed.unchanged) == (0, 1, 3)
    assert "blisters" in store.get_article_by_url(txt.resolve().as_uri()).text
    assert store.last_change() == seq + 1


def test_corrupted_file_keeps_the_stored_article(pdf: Path, store) -> None:
    import_paths([pdf], store)
    seq = store.last_change()
    pdf.write_bytes(b"%PDF-1.4 overwritten by a failed download")
    stats = import_paths([pdf], store)
    assert stats.errors_by_kind == {"corrupt": 1}
    assert store.get_article_by_url(pdf.resolve().as_uri()).title == "Laser hair removal: a guide"
    assert store.last_change() == seq


def test_audience_is_validated_and_stored(docs: Path, store) -> None:
    with pytest.raises(ConfigError) as info:
        import_paths([docs], store, audience="everyone")
    assert "public, staff" in info.value.remedy
    assert store.count_articles() == 0
    import_paths([docs / "acne-protocol.md"], store, audience="public")
    assert store.count_articles(audience="public") == 1
    import_paths([docs / "acne-protocol.md"], store, audience="staff")  # a changed audience is an update
    assert store.count_articles(audience="staff") == 1 and store.count_articles() == 1


def test_title_option(docs: Path, store) -> None:
    path = docs / "laser-aftercare.txt"
    import_paths([path], store, title="After laser: patient leaflet")
    assert store.get_article_by_url(path.resolve().as_uri()).title == "After laser: patient leaflet"
    with pytest.raises(ConfigError) as info:
        import_paths([docs], store, title="One title for many")
    assert "3 files" in info.value.message
    assert store.count_articles() == 1


def test_directory_walk_is_sorted_recursive_and_skips_hidden(docs: Path, store) -> None:
    (docs / "b-sub" / "deeper").mkdir(parents=True)
    (docs / "b-sub" / "deeper" / "psoriasis.txt").write_text("Psoriasis\n\nPlaques with silvery scale.\n",
                                                            encoding="utf-8")
    (docs / ".hidden-dir").mkdir()
    (docs / ".hidden-dir" / "secret.txt").write_text("Secret\n\nNot to import.\n", encoding="utf-8")
    (docs / ".draft.md").write_text("# Draft\n\nA hidden draft that should stay out.\n", encoding="utf-8")
    (docs / "README").write_text("no suffix", encoding="utf-8")
    messages: list[str] = []
    stats = import_paths([docs, docs / "acne-protocol.md"], store, progress=messages.append)
    assert [m.split(": ", 1)[1].replace(str(docs) + "/", "") for m in messages] == [
        "README", "acne-protocol.md", "b-sub/deeper/psoriasis.txt", "laser-aftercare.txt", "rosacea-handout.html"]
    assert messages[0].startswith("skipped (type)")  # no suffix
    assert (stats.new, stats.skipped) == (4, 1)  # the file named twice is imported once
    urls = set(store.article_ids())
    assert (docs / "b-sub" / "deeper" / "psoriasis.txt").resolve().as_uri() in urls
    assert not any("secret" in u or "draft" in u for u in urls)
    assert isinstance(stats, DocumentStats) and stats.added == 4


# --------------------------------------------------------------------------------------------------- CLI

@pytest.fixture
def obj(data_dir: Path):
    from kb.cli import Context

    return Context(data_dir=str(data_dir), verbose=False)


@pytest.fixture
def cli_group():
    from kb.cli import cli

    return cli


def test_cli_add_imports_indexes_and_summarises(docs: Path, pdf: Path, runner, cli_group, obj) -> None:
    result = runner.invoke(cli_group, ["--data-dir", str(obj.paths["root"]), "add", str(docs), "--audience", "public"], obj=obj)
    assert result.exit_code == 0, result.output
    assert "added 4 (new 4, updated 0, unchanged 0), skipped 0" in result.stdout
    assert "index: 4 indexed" in result.stdout
    with obj.store() as store:
        assert store.count_articles(kind="document", audience="public") == 4

    from kb.search import Searcher

    searcher = Searcher(obj.paths["index"])
    try:
        hits = searcher.search("rosacea triggers", audiences=("public",)).hits
    finally:
        searcher.close()
    assert hits and hits[0].url == (docs / "rosacea-handout.html").resolve().as_uri()

    again = runner.invoke(cli_group, ["--data-dir", str(obj.paths["root"]), "add", str(docs)], obj=obj)  # now staff: an audience change updates
    assert "added 4 (new 0, updated 4, unchanged 0), skipped 0" in again.stdout
    same = runner.invoke(cli_group, ["--data-dir", str(obj.paths["root"]), "add", str(docs)], obj=obj)
    assert "added 4 (new 0, updated 0, unchanged 4), skipped 0" in same.stdout
    assert "index: 0 indexed, 0 removed" in same.stdout


def test_cli_reports_skips_and_fails_when_nothing_was_added(tmp_path: Path, docs: Path, runner, cli_group,
                                                           obj) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8")
    mixed = runner.invoke(cli_group, ["--data-dir", str(obj.paths["root"]), "add", str(photo), str(docs / "acne-protocol.md"), "--title", "X"], obj=obj)
    assert mixed.exit_code == 2 and "--title names one document" in mixed.stderr  # ConfigError, no traceback

    mixed = runner.invoke(cli_group, ["--data-dir", str(obj.paths["root"]), "add", str(photo), str(docs / "acne-protocol.md")], obj=obj)
    assert mixed.exit_code == 0
    assert f"skipped {photo}: photo.jpg: unsupported file type '.jpg'" in mixed.stderr
    assert "added 1 (new 1, updated 0, unchanged 0), skipped 1" in mixed.stdout

    only_bad = runner.invoke(cli_group, ["--data-dir", str(obj.paths["root"]), "add", str(photo)], obj=obj)
    assert only_bad.exit_code == 1 and "Traceback" not in only_bad.output
    assert "No document could be added." in only_bad.stderr


def test_cli_rejects_bad_arguments(docs: Path, runner, cli_group, obj) -> None:
    bad = runner.invoke(cli_group, ["--data-dir", str(obj.paths["root"]), "add", str(docs), "--audience", "everyone"], obj=obj)
    assert bad.exit_code == 2 and "everyone" in bad.stderr
    missing = runner.invoke(cli_group, ["--data-dir", str(obj.paths["root"]), "add", str(docs / "nope.md")], obj=obj)
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    none = runner.invoke(cli_group, ["--data-dir", str(obj.paths["root"]), "add"], obj=obj)
    assert none.exit_code == 2
