"""kb.neardup: SimHash fingerprints of near-identical texts are close, of different articles far apart."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

from kb.neardup import (
    BANDS,
    MIN_OVERLAP,
    MIN_WORDS,
    NEAR_BITS,
    bands,
    fingerprint,
    hamming,
    overlap,
    same_title,
    simhash,
    words,
)
from tests.texts import ARTICLE, LASERS, REPOST_FOOTER, REPOST_HEADER, TRIGGERS


def test_texts_are_long_enough_to_be_merged() -> None:
    assert 180 <= len(words(TRIGGERS)) <= 260 and 180 <= len(words(LASERS)) <= 260
    assert fingerprint(TRIGGERS) == simhash(TRIGGERS)


def test_identical_text_is_distance_zero() -> None:
    assert hamming(simhash(TRIGGERS), simhash(TRIGGERS)) == 0
    assert simhash(TRIGGERS) != 0 and simhash(TRIGGERS).bit_length() <= 64


def test_whitespace_case_and_punctuation_do_not_matter() -> None:
    variant = "  ".join(TRIGGERS.upper().split()).replace(",", " ;").replace(".", " ...")
    assert hamming(simhash(TRIGGERS), simhash(variant)) == 0
    assert words("ＶＢｅａｍ, CO₂-laser & IPL_light") == ["vbeam", "co2", "laser", "ipl", "light"]  # NFKC


def test_a_header_or_footer_line_stays_within_near_bits() -> None:
    """On a 400-word article. On a 200-word one a 10-word line is 5% of the text, ~5-8 bits (see kb.neardup)."""
    base = simhash(ARTICLE)
    assert hamming(base, simhash(REPOST_HEADER + ARTICLE)) <= NEAR_BITS
    assert hamming(base, simhash(ARTICLE + REPOST_FOOTER)) <= NEAR_BITS
    assert hamming(base, simhash(REPOST_HEADER + ARTICLE + REPOST_FOOTER)) <= NEAR_BITS


def test_a_changed_word_stays_within_near_bits() -> None:
    assert hamming(simhash(ARTICLE), simhash(ARTICLE.replace("spicy food", "curry"))) <= NEAR_BITS
    assert hamming(simhash(ARTICLE), simhash(ARTICLE.replace("three to four", "four to five"))) <= NEAR_BITS
    rng = random.Random(1)
    for text, share in ((ARTICLE, 0.97), (TRIGGERS, 0.85), (LASERS, 0.85)):
        tokens = text.split()
        near = 0
        for _ in range(100):
            changed = list(tokens)
            changed[rng.randrange(len(changed))] = "different"
            near += hamming(simhash(text), simhash(" ".join(changed))) <= NEAR_BITS
        assert near >= share * 100, (len(tokens), near)


def test_different_articles_on_the_same_topic_are_far_apart() -> None:
    assert hamming(simhash(TRIGGERS), simhash(LASERS)) > 3 * NEAR_BITS


def test_near_dup_recall_and_unrelated_separation_on_shuffled_texts() -> None:
    """Not two hand-picked texts: 40 random variants stay near, 40 word-shuffled texts stay far."""
    rng = random.Random(7)
    pool = words(TRIGGERS + " " + LASERS)
    near = far = 0
    for _ in range(40):
        text = " ".join(rng.choice(pool) for _ in range(300))
        tokens = text.split()
        tokens[rng.randrange(len(tokens))] = "different"
        near += hamming(simhash(text), simhash(" ".join(tokens))) <= NEAR_BITS
        far += hamming(simhash(text), simhash(" ".join(rng.sample(tokens, len(tokens))))) > 2 * NEAR_BITS
    assert near >= 38 and far == 40


def test_short_texts_get_no_fingerprint() -> None:
    assert fingerprint(" ".join(words(TRIGGERS)[:MIN_WORDS - 1])) is None
    assert fingerprint(" ".join(words(TRIGGERS)[:MIN_WORDS])) is not None
    assert simhash("") == 0


def test_bands_cover_every_bit_and_pigeonhole_holds() -> None:
    blocks = NEAR_BITS + 2  # at least two blocks survive NEAR_BITS changes; bands are pairs of blocks
    assert len(bands(0)) == BANDS == blocks * (blocks - 1) // 2
    assert bands(0) == (0,) * BANDS
    assert all(v.bit_length() == 16 for v in bands((1 << 64) - 1))  # 16-bit keys: few articles share one
    for bit in range(64):  # every bit is in some band
        assert bands(1 << bit) != bands(0)
    rng = random.Random(3)
    for _ in range(300):
        h = rng.getrandbits(64)
        flipped = h
        for bit in rng.sample(range(64), NEAR_BITS):
            flipped ^= 1 << bit
        assert hamming(h, flipped) == NEAR_BITS
        assert any(a == b for a, b in zip(bands(h), bands(flipped)))


def test_hash_is_stable_across_processes() -> None:
    """blake2b, not hash(): a fingerprint stored by one process must match one computed by the next."""
    code = "from tests.texts import TRIGGERS; from kb.neardup import simhash; print(simhash(TRIGGERS))"
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", "PYTHONPATH": root}, cwd=root)
    assert int(out.stdout) == simhash(TRIGGERS)


def test_same_title_allows_a_prefix_but_not_another_subject() -> None:
    assert same_title("Rosacea triggers", "Guest post: Rosacea triggers")
    assert same_title("ROSACEA TRIGGERS!", "rosacea triggers")
    assert not same_title("Is Barth syndrome inherited?", "Is Lesch-Nyhan syndrome inherited?")
    assert not same_title("", "Rosacea triggers") and not same_title("", "")
    assert hamming(simhash(TRIGGERS), simhash(TRIGGERS.replace("rosacea", "eczema"))) <= 2 * NEAR_BITS


def test_overlap_accepts_reposts_and_rejects_excerpts_and_reorderings() -> None:
    assert overlap(ARTICLE, REPOST_HEADER + ARTICLE + REPOST_FOOTER) >= 0.9
    excerpt = " ".join(ARTICLE.split()[:120])  # a teaser of a third of the article is not a copy of it
    assert overlap(ARTICLE, excerpt) < MIN_OVERLAP
    assert overlap(ARTICLE, " ".join(reversed(ARTICLE.split()))) < 0.05
    assert overlap("", ARTICLE) == 0.0
