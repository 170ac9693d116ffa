"""Whether a text carries a medical disclaimer ("not medical advice", "consult your doctor", ...). Pure.

Extraction flags new pages with it; the store's migration flags articles stored before the flag existed.
Both need the same rule, and the store must not depend on the extractor, so it lives here on its own.
"""

from __future__ import annotations

import re

DISCLAIMER_RE = re.compile(
    r"not (intended (as|to be|to provide)|a substitute for|to be (taken|construed) as|meant as|considered)?"
    r"\s*(professional\s+)?medical advice"
    r"|(for|is for) (general )?(informational|information|educational) purposes only"
    r"|(consult|talk to|speak (to|with)|see|ask|check with) (with )?(your|a|an) "
    r"(own )?(qualified )?(doctor|physician|dermatologist|gp|healthcare|health care|medical)"
    r"|does not (constitute|replace|provide) (professional )?medical advice"
    r"|no doctor[- ]patient relationship",
    re.I,
)


def has_disclaimer(text: str) -> bool:
    """True when the text carries a medical disclaimer ("not medical advice", "consult your doctor", ...)."""
    return bool(text) and bool(DISCLAIMER_RE.search(" ".join(text.split())))
