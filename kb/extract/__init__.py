"""Turn one HTML page into Article records: main text, sections with anchors, metadata. Pure: never fetches.

The crawler hands us bytes; everything here is a function of those bytes and the URL, so re-extraction from
the raw cache gives the same records, and every rule can be tested on a saved page.

How the main content is found (after readability and trafilatura):
1. Junk that is never article text is dropped from the whole page: scripts, styles, forms, iframes,
   navigation, sidebars and widgets, comment threads, share bars, cookie banners, hidden elements. An
   element is spared when it holds the page's main-content markers (the <h1>, <main>, `.entry-content`, …),
   because theme class names such as `tag-share` or `has-sidebar` sit on the very wrappers we need.
2. Paragraph-like blocks are scored by length and commas, discounted by link density, and their scores
   flow to their parent and grandparent; the best container plus similar siblings is the density choice.
3. Semantic containers (`.entry-content`, `article`, `main`, `[role=main]`, `#content`, …) win when they
   hold most of the density choice's prose; the density choice is the fallback for div soup.
4. Inside the chosen container, link lists, boilerplate classes and other low-text blocks are pruned, and
   what is left is serialised block by block: headings start Sections, paragraphs are separated by blank lines.
5. Each Section also gets the same blocks as safe markup (lists, sub-headings, emphasis, quotes, tables, links;
   kb.extract.markup's allow-list), rebuilt from the text nodes its plain text was made of, for the article page.

Callers use the names below, or import one part on its own (the pipeline decodes bodies with
kb.extract.charset, the web re-cleans stored markup with kb.extract.markup). The parts import one way
only, each from those listed before it:

    charset     bytes to text: BOMs, HTTP and <meta> charsets, decode_html
    markup      the safe-markup allow-list serialiser (extraction writes it, the web re-cleans it)
    tree        parsing with bounded depth; visible text, attributes and slugs of the parsed tree
    metadata    JSON-LD, <meta> tags, dates, title splitting, meta robots (uses charset, tree)
    content     furniture names, text measures, cleanup, container choice, pruning (steps 1-4)
    blocks      the chosen containers as heading and paragraph blocks; fragments
    page        _Page and extract: title, sections, anchors, markup (step 5), plain text
    faq         extract_faqs, over page's parsed document and anchors

kb.disclaimer stays outside the package: the store uses it too and must not import the extractor.
"""

from __future__ import annotations

from kb.disclaimer import has_disclaimer
from kb.extract.charset import decode_html, detect_charset
from kb.extract.faq import extract_faqs
from kb.extract.metadata import meta_robots, normalise_date
from kb.extract.page import HTML_TYPES, extract
from kb.text import slugify

__all__ = [
    "HTML_TYPES", "decode_html", "detect_charset", "extract", "extract_faqs", "has_disclaimer", "meta_robots",
    "normalise_date", "slugify",
]
