"""Score calibration: one relevance scale for every embedding space.

Cosine similarities of different models are not comparable: a CLIP text-image
match scores around 0.3, a CLAP text-audio match can score 0.6, and an unrelated
query still finds *something* in any library. So each space is calibrated against
what unrelated queries reach in it:

1. a fixed set of null queries (everyday phrases from unrelated domains and
   strings of random letters) is encoded by the space's text tower once;
2. for every store version, each null query is ranked against the space and its
   best item score kept: the distribution of "best match when nothing is relevant";
3. a hit's calibrated score is how far its similarity lies above that distribution:
   (similarity − median) / standard deviation. The median is robust to the odd null
   query that happens to match the library; the spread is the plain standard deviation
   on purpose: chance matches have a heavy upper tail (a random string whose pieces
   resemble a word the model knows), and the median absolute deviation, blind to that
   tail, let 10% of random strings pass a threshold of 3 with the reference models
   against 5% with the standard deviation.

A calibrated score of 0 is what a typical unrelated query's best match gets, 3 is
well above nearly all of them; the same threshold (`min_score`) therefore means
the same in every space, and a query about nothing in the library returns nothing
above it. The null best scores depend on the library (a bigger library offers
luckier chance matches), which is why they are recomputed per store version.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Everyday phrases far from any one media library's subject, in the plain style of
# search queries; together with the random strings below they stand for "a query
# about something that is not there".
_PHRASES = (
    "quarterly tax return deadline",
    "how to reset a wireless router",
    "the history of the roman senate",
    "lentil soup recipe with cumin",
    "mortgage interest rates this year",
    "symptoms of a vitamin deficiency",
    "train timetable to the airport",
    "python list comprehension example",
    "the rules of cricket explained",
    "renew a passport online",
    "best practices for password storage",
    "a sonnet about the passing of time",
    "compound interest formula",
    "municipal recycling schedule",
    "photosynthesis in plain words",
    "the capital city of mongolia",
    "insurance claim form for water damage",
    "how many grams in an ounce",
    "a letter of resignation",
    "legal definition of negligence",
    "opening hours of the public library",
    "translate good morning into finnish",
    "quantum entanglement for beginners",
    "list of prime numbers under one hundred",
    "warranty terms and conditions",
    "meeting minutes from tuesday",
    "the plot of a detective novel",
    "cholesterol and heart health",
    "spreadsheet formula to sum a column",
    "election results by district",
    "apology email to a customer",
    "philosophy of free will",
)
_RANDOM_STRINGS = 32
MIN_SPREAD = 0.01  # cosine units: a floor so that identical null scores cannot divide by ~0


def null_queries() -> list[str]:
    """The calibration queries: fixed phrases plus seeded random letter strings."""
    rng = np.random.default_rng(20261123)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    strings = []
    for _ in range(_RANDOM_STRINGS):
        words = [
            "".join(rng.choice(letters, int(rng.integers(3, 9))))
            for _ in range(int(rng.integers(1, 4)))
        ]
        strings.append(" ".join(words))
    return [*_PHRASES, *strings]


@dataclass(frozen=True)
class Calibration:
    """Maps a space's cosine similarity to the shared scale."""

    center: float  # median best similarity of the null queries
    spread: float  # standard deviation of those best similarities

    def score(self, similarity: float) -> float:
        return (similarity - self.center) / self.spread

    @classmethod
    def fit(cls, null_best: np.ndarray) -> Calibration:
        """From each null query's best similarity in the space."""
        values = np.asarray(null_best, np.float64)
        values = values[np.isfinite(values)]
        if len(values) == 0:  # an empty space: nothing can be scored anyway
            return cls(0.0, 1.0)
        return cls(float(np.median(values)), max(float(values.std()), MIN_SPREAD))


__all__ = ["MIN_SPREAD", "Calibration", "null_queries"]
