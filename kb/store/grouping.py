"""Near-duplicate grouping (kb.neardup), written once for every store implementation.

Which article heads which group is an algorithm over a handful of reads and one write; the implementations
supply those as small SQL primitives (`_article_for_grouping`, `_band_matches`, `_primary_candidates`,
`_member_ids`, `_set_dup_of`, `_max_id`), so both databases group exactly alike.
"""

from __future__ import annotations

import heapq
from abc import abstractmethod
from typing import Any, Iterable, Mapping

from kb.neardup import MIN_OVERLAP, NEAR_BITS, bands, from_text, hamming, overlap, same_title


class NearDuplicateGrouping:
    """Mixin of a Store implementation: `_near_primaries` and `_settle` over the primitives below."""

    @abstractmethod
    def _article_for_grouping(self, article_id: int) -> Mapping[str, Any] | None:
        """id, title, text, audience, kind, simhash and dup_of of one article, or None when it is gone."""

    @abstractmethod
    def _band_matches(self, band: int, value: int) -> Iterable[tuple[int, int]]:
        """(article id, signed simhash) of every article whose fingerprint has `value` in `band`."""

    @abstractmethod
    def _primary_candidates(self, ids: list[int], audience: str, kind: str) -> list[Mapping[str, Any]]:
        """id, title and text of the primaries (dup_of NULL) among `ids` with this audience and kind."""

    @abstractmethod
    def _member_ids(self, article_id: int) -> list[int]:
        """Ids of the articles grouped under `article_id`."""

    @abstractmethod
    def _set_dup_of(self, article_id: int, primary: int | None) -> None:
        """Record the primary `article_id` is grouped under (None: it heads its own group)."""

    @abstractmethod
    def _max_id(self) -> int:
        """The highest article id (0 when there is none)."""

    def _near_primaries(self, row: Mapping[str, Any], later: bool = False) -> list[tuple[int, int]]:
        """(distance, id) of the primaries near `row`, closest first: same audience and kind, compatible title.

        Only primaries with a lower id (`later`: a higher one): the first stored copy heads its group.
        A staff copy never joins a public group, so patients never see staff URLs and vice versa.
        The band rows carry the fingerprint, so only the few within NEAR_BITS are looked up in the articles,
        and those must share at least MIN_OVERLAP of their 3-word shingles (`kb.neardup.overlap`).
        """
        simhash = from_text(row["simhash"])
        near: dict[int, int] = {}
        for band, value in enumerate(bands(simhash)):
            for other, other_hash in self._band_matches(band, value):
                if (other > row["id"] if later else other < row["id"]) and other not in near:
                    distance = hamming(simhash, other_hash & ((1 << 64) - 1))
                    if distance <= NEAR_BITS:
                        near[other] = distance
        if not near:
            return []
        found = self._primary_candidates(sorted(near), row["audience"], row["kind"])
        # The fingerprint proposes, the texts decide: same-titled articles on one topic can come close.
        return sorted((near[r["id"]], r["id"]) for r in found
                      if same_title(row["title"], r["title"]) and overlap(row["text"], r["text"]) >= MIN_OVERLAP)

    def _settle(self, ids: list[int], changed: bool = False) -> tuple[set[int], set[int]]:
        """Regroup after `ids` changed (`changed`: their content) or lost their primary; (upsert, delete) ids.

        Greedy in id order, as if every article had been stored anew: each joins the closest earlier
        primary near it or is a primary itself, and a primary takes in later primaries near it. Only
        higher ids are queued while an id is processed, so each is visited once and no group chains.
        """
        upserts: set[int] = set()
        deletes: set[int] = set()
        forced = set(ids) if changed else set()
        heap = sorted(set(ids))
        visited: set[int] = set()
        while heap:
            article_id = heapq.heappop(heap)
            if article_id in visited:
                continue
            visited.add(article_id)
            row = self._article_for_grouping(article_id)
            if row is None:
                continue
            old = row["dup_of"]
            near = self._near_primaries(row) if row["simhash"] else []
            new = near[0][1] if near else None
            if old == new and article_id not in forced:
                continue
            if old != new:
                self._set_dup_of(article_id, new)
            if old is None or article_id in forced:  # its members must look again
                for member in self._member_ids(article_id):
                    heapq.heappush(heap, member)
            if old is not None:
                upserts.add(old)
            if new is None:
                upserts.add(article_id)
                if row["simhash"] and article_id < self._max_id():
                    for _, later in self._near_primaries(row, later=True):
                        heapq.heappush(heap, later)
            else:
                deletes.add(article_id)
                upserts.add(new)
        return upserts, deletes
