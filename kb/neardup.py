"""Near-duplicate detection: 64-bit SimHash fingerprints compared by Hamming distance.

Clinics syndicate the same article on partners' blogs with different chrome, so exact hashes
never match. Charikar's SimHash maps similar texts to fingerprints that differ in few bits;
Manku, Jain and Das Sarma ("Detecting near-duplicates for web crawling", WWW 2007) compare
64-bit fingerprints by Hamming distance and find every candidate with exact lookups of bands:
split the fingerprint into k + 1 bands and two fingerprints at most k bits apart share at
least one band unchanged (pigeonhole).

Their k = 3 suits long web pages. Clinic articles are short, so we measured on the MedQuAD
answers (3,472 texts of 80+ words) adding one 8-word header line: within 3 bits for only 21%
of 80-200-word texts, 49% at 200-400 and 78% at 400-800 words; within 6 bits 70%, 91% and 99%.
Hence NEAR_BITS = 6. Seven 9-bit bands would do for the pigeonhole, but 9-bit keys are
shared by hundreds of articles at 100,000 (and more on a corpus with common phrasing), making
every save scan thousands of rows; instead eight 8-bit blocks, of which at least two survive six
changed bits, are looked up in pairs: 28 keys of 16 bits, each shared by a handful of articles. Unrelated texts sit ~32 bits apart (random pairs within
6 bits: ~5e-12), but templated pages (the same text with another disease name) come as close
as 0-3 bits, so a match also needs compatible titles (`same_title`): a reposted article keeps
its headline, a template page names its own subject there.

Pure functions, no I/O: the store decides what to compare with and keeps the bands indexed.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata

log = logging.getLogger(__name__)

#: Fingerprints at most this many bits apart are one text (see the module docstring for the measurement).
NEAR_BITS = 6
#: Shorter texts (FAQ answers, stubs) are never merged: a few shared sentences say nothing about the whole.
MIN_WORDS = 80
#: Words per shingle: word order matters, so two articles on one topic with the same vocabulary differ.
SHINGLE = 3
BITS = 64
#: Pigeonhole: NEAR_BITS changed bits leave at least two of NEAR_BITS + 2 blocks unchanged ...
BLOCKS = NEAR_BITS + 2
_WIDTHS = tuple(BITS // BLOCKS + (1 if i < BITS % BLOCKS else 0) for i in range(BLOCKS))
#: ... so fingerprints within NEAR_BITS share at least one pair of blocks (a band) exactly.
_PAIRS = tuple((i, j) for i in range(BLOCKS) for j in range(i + 1, BLOCKS))
BANDS = len(_PAIRS)

# Letters and digits; punctuation, symbols and the underscore separate words (they vary between sites).
_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> list[str]:
    """Normalised words: NFKC (full-width, ligatures, CO₂ -> CO2) and casefold, punctuation dropped."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def word_count(text: str) -> int:
    return len(words(text))


def _feature(shingle: str) -> str:
    """64-bit stable hash of one shingle as a bit string; blake2b, never hash() (salted per process)."""
    digest = hashlib.blake2b(shingle.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return format(int.from_bytes(digest, "big"), "064b")


def fingerprint(text: str) -> int | None:
    """The text's SimHash, or None when it has fewer than MIN_WORDS words and must never be merged."""
    tokens = words(text)
    return _simhash(tokens) if len(tokens) >= MIN_WORDS else None


def simhash(text: str) -> int:
    """Charikar SimHash over overlapping 3-word shingles, each occurrence one vote per bit.

    Bit i is set when more than half of the shingles' hashes have it set. Counting the
    transposed bit strings keeps the loop in C (~1 ms for a 1,000-word article). A text
    without words hashes to 0.
    """
    return _simhash(words(text))


def _shingles(tokens: list[str]) -> list[str]:
    """Overlapping SHINGLE-word runs (the whole text when it is shorter), in order, repeats kept."""
    n = min(SHINGLE, len(tokens))
    return [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)] if tokens else []


def _simhash(tokens: list[str]) -> int:
    if not tokens:
        return 0
    features = [_feature(shingle) for shingle in _shingles(tokens)]
    half = len(features) / 2
    bits = "".join("1" if column.count("1") > half else "0" for column in zip(*features))
    return int(bits, 2)


def hamming(a: int, b: int) -> int:
    """Bits in which two fingerprints differ."""
    return (a ^ b).bit_count()


def bands(h: int) -> tuple[int, ...]:
    """The BANDS lookup keys of `h` (pairs of blocks); fingerprints within NEAR_BITS share at least one."""
    blocks: list[int] = []
    shift = BITS
    for width in _WIDTHS:
        shift -= width
        blocks.append((h >> shift) & ((1 << width) - 1))
    return tuple((blocks[i] << _WIDTHS[j]) | blocks[j] for i, j in _PAIRS)


def to_text(h: int) -> str:
    """16 hex digits: SQLite integers are signed, so the store keeps fingerprints as text."""
    return f"{h:016x}"


def from_text(value: str) -> int:
    return int(value, 16)


def is_near(a: int, b: int) -> bool:
    return hamming(a, b) <= NEAR_BITS


def same_title(a: str, b: str) -> bool:
    """Whether two titles can head one article: the words of one contain the other's.

    "Rosacea triggers" matches "Guest post: rosacea triggers"; "Is Barth syndrome inherited?"
    does not match "Is Lesch-Nyhan syndrome inherited?" although their texts are identical. An
    empty title matches nothing: without a headline there is no evidence it is the same article.
    """
    wa, wb = set(words(a)), set(words(b))
    return bool(wa and wb) and (wa <= wb or wb <= wa)


#: Share of the longer text's shingles the other must contain to be its copy (see `overlap`).
MIN_OVERLAP = 0.5


def shingles(text: str) -> set[str]:
    return set(_shingles(words(text)))


def overlap(a: str, b: str) -> float:
    """Share of the longer text's 3-word shingles found in the other (0..1): an excerpt is not a copy.

    The fingerprint only proposes candidates: on a corpus of articles written from one pool of
    sentences per topic, same-titled articles sharing 4-20% of their shingles came within 6 bits
    (100,000 synthetic articles, 1.6% merged wrongly). Checking the few candidates' texts costs
    ~1 ms each; a repost with a different intro or footer keeps well above MIN_OVERLAP.
    """
    sa, sb = shingles(a), shingles(b)
    if not sa or not sb:
        return 0.0
    return len(sa & sb) / max(len(sa), len(sb))

