"""The audience filter, written once: every store query that returns or counts records for a reader uses it.

A record's audience decides who may see it ("public": anyone; "staff": signed-in staff). Readers pass the
audiences they may see, and the filter goes inside the query, so a hidden record is never read, counted,
ranked or cached for someone who may not see it. Pure: builds SQL text and parameters, runs nothing.
"""

from __future__ import annotations

#: The audiences a reader may see, e.g. ("public",) or ("public", "staff"); None means every audience and is
#: for callers that answer no reader (pipeline, indexer, CLI maintenance commands).
Audiences = tuple[str, ...] | None


def audience_sql(audiences: Audiences, column: str = "audience", mark: str = "?") -> tuple[str, tuple[str, ...]]:
    """(condition, parameters) keeping the rows whose `column` is one of `audiences`.

    None gives a condition every row meets; an empty tuple one that no row meets (nobody sees anything).
    `mark` is the driver's placeholder ("?" for sqlite3, "%s" for psycopg). A bare string is refused:
    "public" would otherwise read as the audiences "p", "u", "b", ...
    """
    if audiences is None:
        return "1 = 1", ()
    if isinstance(audiences, str) or not all(isinstance(a, str) for a in audiences):
        raise TypeError(f"audiences must be a tuple of audience names, not {audiences!r}")
    values = tuple(audiences)
    return f"{column} IN ({', '.join([mark] * len(values)) or 'NULL'})", values
