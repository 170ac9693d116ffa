"""Local documents: `kb add PATH...` imports HTML, Markdown, text and PDF files as kind="document" articles."""

from __future__ import annotations

import io
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
import zlib
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


def make_stream_bomb_pdf(stream_bytes: int = 5_000_000) -> bytes:
    """A small valid PDF whose one page's content stream inflates to `stream_bytes` of text operators.

    pypdf parses such a stream in pure Python: 5 MB took 14 s of CPU here, from an 8 KB file.
    """
    ops = b"BT /F1 12 Tf 72 720 Td\n" + b"(a) Tj\n" * (stream_bytes // 7) + b"ET"
    packed = zlib.compress(ops, 9)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> "
        b"/Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(packed), packed),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
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
    stats = import_paths([docs], store, timeout=None)  # read in this process, where the patch applies
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


# ------------------------------------------------------------------------------- bounded time and memory

def test_a_pdf_that_takes_too_long_is_stopped_and_the_other_files_are_imported(docs: Path, store) -> None:
    bomb = docs / "a-bomb.pdf"
    bomb.write_bytes(make_stream_bomb_pdf())
    assert bomb.stat().st_size < 16_000
    started = time.monotonic()
    stats = import_paths([docs], store, timeout=1.0)
    elapsed = time.monotonic() - started
    assert stats.skips == [{"path": str(bomb), "kind": "timeout",
                            "reason": "a-bomb.pdf took longer than 1 s to read and was stopped (a damaged or "
                                      "hostile file?); if it is a genuine large document, raise IMPORT_TIMEOUT"}]
    assert stats.new == 3  # the handouts after it were read by a fresh process
    assert elapsed < 5, f"import took {elapsed:.1f} s"  # reading the bomb to the end takes 14 s
    assert store.get_article_by_url(bomb.resolve().as_uri()) is None


@pytest.mark.skipif(sys.platform != "linux", reason="reads the reading process's limits from /proc")
def test_a_reading_process_that_dies_is_a_skip_and_has_a_memory_cap(tmp_path: Path, store) -> None:
    bomb, handout = tmp_path / "bomb.pdf", tmp_path / "handout.txt"
    bomb.write_bytes(make_stream_bomb_pdf())
    handout.write_text("Sun protection\n\nUse SPF 50 after a peel.\n", encoding="utf-8")
    limits: list[str] = []

    def kill_the_reader() -> None:  # as the kernel's OOM killer would, while it reads the bomb
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            readers = [p for p in multiprocessing.active_children() if p.name == "kb-add-reader"]
            if readers and readers[0].pid:
                time.sleep(0.2)
                limits.extend(Path(f"/proc/{readers[0].pid}/limits").read_text().splitlines())
                os.kill(readers[0].pid, signal.SIGKILL)
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_the_reader)
    killer.start()
    try:
        stats = import_paths([bomb, handout], store, timeout=30)
    finally:
        killer.join()
    assert [(s["path"], s["kind"]) for s in stats.skips] == [(str(bomb), "crashed")]
    assert "bomb.pdf ended the reading process (exit code -9)" in stats.skips[0]["reason"]
    assert stats.new == 1
    address_space = next(line for line in limits if line.startswith("Max address space")).split()
    assert address_space[3] == str(2 << 30)  # soft limit: READER_MEMORY


def test_cli_add_takes_the_time_limit_from_the_setting(tmp_path: Path, docs: Path, runner, cli_group, obj) -> None:
    (docs / "a-bomb.pdf").write_bytes(make_stream_bomb_pdf())
    result = runner.invoke(cli_group, ["--data-dir", str(obj.paths["root"]), "add", str(docs)],
                           env={"KB_IMPORT_TIMEOUT": "1"})
    assert result.exit_code == 0, result.output
    assert f"skipped {docs / 'a-bomb.pdf'}: a-bomb.pdf took longer than 1 s to read" in result.stderr
    assert "added 3 (new 3, updated 0, unchanged 0), skipped 1" in result.stdout
    bad = runner.invoke(cli_group, ["--data-dir", str(obj.paths["root"]), "add", str(docs)],
                        env={"KB_IMPORT_TIMEOUT": "0"})
    assert bad.exit_code == 2 and "IMPORT_TIMEOUT=0.0 must be more than 0 and at most" in bad.stderr


# ---------------------------------------------------------------------------- links and the data directory

@pytest.fixture
def linked_tree(tmp_path: Path, data_dir: Path) -> Path:
    """docs/ with a link inside the tree, links to a file and a folder outside it, and links to kb's secret key."""
    outside = tmp_path / "outside"
    (outside / "folder").mkdir(parents=True)
    (outside / "private.txt").write_text("Private notes\n\nsalary review of Dr B.\n", encoding="utf-8")
    (outside / "folder" / "other.md").write_text("# Other\n\nsomeone else's protocol\n", encoding="utf-8")
    (data_dir / "secret_key").write_text("0123456789abcdef-secret-key\n", encoding="ascii")
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "peel.txt").write_text("Chemical peel\n\nGlycolic acid 30 percent for two minutes.\n", encoding="utf-8")
    (docs / "sub" / "same-peel.txt").symlink_to(docs / "peel.txt")  # inside the tree
    (docs / "sub" / "peel-folder").symlink_to(docs / "sub")  # a folder inside the tree (and a loop)
    (docs / "notes.txt").symlink_to(outside / "private.txt")
    (docs / "passwd.txt").symlink_to("/etc/passwd")
    (docs / "shared").symlink_to(outside / "folder", target_is_directory=True)
    (docs / "key.txt").symlink_to(data_dir / "secret_key")
    os.link(data_dir / "secret_key", docs / "hard-key.txt")  # no link to see: the same file
    return docs


def test_links_out_of_the_tree_and_kb_data_are_skipped_with_reasons(linked_tree: Path, store, data_dir) -> None:
    docs = linked_tree
    stats = import_paths([docs], store)
    assert stats.new == 1  # peel.txt, once, though a link inside the tree leads to it too
    assert store.get_article_by_url((docs / "peel.txt").resolve().as_uri()).title == "Chemical peel"
    skips = {Path(s["path"]).relative_to(docs).as_posix(): (s["kind"], s["reason"]) for s in stats.skips}
    assert set(skips) == {"notes.txt", "passwd.txt", "shared", "key.txt", "hard-key.txt"}
    private = docs.parent / "outside" / "private.txt"
    assert skips["notes.txt"] == ("link_outside", f"notes.txt is a link to {private}, outside {docs}; kb add does "
                                  "not follow links out of the folder it is given (add the target itself if it "
                                  "belongs in the knowledge base)")
    assert skips["passwd.txt"][0] == "link_outside" and "/etc/passwd" in skips["passwd.txt"][1]
    assert skips["shared"][0] == "link_outside" and "a link to the folder" in skips["shared"][1]
    assert skips["key.txt"][0] == "link_outside"  # the secret key is outside the tree, too
    assert skips["hard-key.txt"][0] == "data_dir" and "never imported" in skips["hard-key.txt"][1]
    text = " ".join(store.get_article(i).text for i in store.article_ids().values())
    assert "salary" not in text and "root:" not in text and "secret-key" not in text and "someone" not in text


def test_the_data_directory_is_never_imported(tmp_path: Path, linked_tree: Path, store, data_dir: Path) -> None:
    (data_dir / "notes.md").write_text("# Notes\n\nkept next to the store\n", encoding="utf-8")
    (tmp_path / "named-key.txt").symlink_to(data_dir / "secret_key")
    stats = import_paths([tmp_path, data_dir, data_dir / "notes.md", tmp_path / "named-key.txt"], store)
    assert stats.added == 0 and store.count_articles() == 0
    reasons = [(s["path"], s["kind"], s["reason"]) for s in stats.skips]
    assert reasons[0] == (str(tmp_path), "data_dir", f"{tmp_path} contains kb's data directory ({data_dir.resolve()}: "
                          "secret key, store, settings), which is never imported; name the document folders inside "
                          "it instead")
    assert [r[:2] for r in reasons[1:]] == [(str(data_dir), "data_dir"), (str(data_dir / "notes.md"), "data_dir"),
                                           (str(tmp_path / "named-key.txt"), "data_dir")]
    assert all("is kb's own data" in r[2] for r in reasons[1:])


def test_cli_add_says_what_it_skipped_and_why(tmp_path: Path, linked_tree: Path, runner, cli_group, obj) -> None:
    root = obj.paths["root"]
    (root / "secret_key").write_text("0123456789abcdef-secret-key\n", encoding="ascii")
    result = runner.invoke(cli_group, ["--data-dir", str(root), "add", str(linked_tree)])
    assert result.exit_code == 0, result.output
    assert f"skipped {linked_tree / 'passwd.txt'}: passwd.txt is a link to /etc/passwd, outside" in result.stderr
    assert "added 1 (new 1, updated 0, unchanged 0), skipped 5" in result.stdout
    refused = runner.invoke(cli_group, ["--data-dir", str(root), "add", str(root)])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert f"skipped {root}: {root} is kb's own data" in refused.stderr
    assert "No document could be added" in refused.stderr


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
