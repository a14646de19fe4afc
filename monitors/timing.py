"""Fixed buckets for how long jobs run and wait, and percentiles read back from bucket counts.

Every JobHistogram row counts the jobs whose time fell in one bucket, named by its upper bound in
milliseconds. The bounds are fixed (not configurable) so that rows written months apart add up;
they are closer together between 0.1 s and an hour, where tasks' times usually are, and run from
1 ms to a day, beyond which one overflow bucket counts the rest. Because each row names its own
bound, changing BOUNDS_MS later leaves old rows readable.

A percentile is estimated as Prometheus's histogram_quantile does: find the bucket holding the
wanted rank, then interpolate linearly between its bounds. With these bounds the estimate is
within the bucket around the true value (at most ±50 % of it, usually much closer), which is
enough to see a task slow down; the job rows hold the exact times.
"""

from bisect import bisect_left
from dataclasses import dataclass

BOUNDS_MS = (
    1, 2, 5, 10, 20, 50, 100, 200, 300, 500, 750,
    1_000, 1_500, 2_000, 3_000, 5_000, 7_500, 10_000, 15_000, 20_000, 30_000, 45_000,
    60_000, 90_000, 120_000, 180_000, 300_000, 450_000, 600_000, 900_000, 1_200_000, 1_800_000, 2_700_000,
    3_600_000, 5_400_000, 7_200_000, 10_800_000, 21_600_000, 43_200_000, 86_400_000,
)
OVERFLOW_MS = 10**15  # "more than a day": sorts after every bound
UPPER_BOUNDS_MS = (*BOUNDS_MS, OVERFLOW_MS)
MINUTE, HOUR, DAY = 60, 3600, 86400  # the resolutions JobHistogram keeps (a day is a UTC day)


def bucket_of(seconds):
    """The upper bound (ms) of the bucket `seconds` falls in: the first bound ≥ it."""
    index = bisect_left(BOUNDS_MS, seconds * 1000)
    return UPPER_BOUNDS_MS[index]


def lower_bound_ms(upper_ms):
    index = UPPER_BOUNDS_MS.index(upper_ms) if upper_ms in UPPER_BOUNDS_MS else bisect_left(BOUNDS_MS, upper_ms)
    return UPPER_BOUNDS_MS[index - 1] if index > 0 else 0


def bucket_label(upper_ms):
    """"≤ 50 ms", "≤ 1.5 s", "≤ 2 min", "> 24 h"."""
    if upper_ms >= OVERFLOW_MS:
        return f"> {duration(BOUNDS_MS[-1] / 1000)}"
    return f"≤ {duration(upper_ms / 1000)}"


def percentile(counts, fraction):
    """Seconds below which `fraction` of the counted jobs fall, from {upper_ms: count}; None
    when nothing was counted. In the overflow bucket the answer is its lower bound (a day)."""
    return percentiles(counts, (fraction,))[0]


def percentiles(counts, fractions):
    """percentile() of each of `fractions`, in their order, from one walk through the buckets
    (a task's page draws three lines of them over 168 hours)."""
    total = sum(counts.values())
    if not total:
        return [None] * len(fractions)
    waiting = sorted(fractions, reverse=True)  # the smallest last, to pop first
    found = {}
    seen = 0
    for upper in sorted(counts):
        count = counts[upper]
        if not count:
            continue
        while waiting and seen + count >= waiting[-1] * total:
            fraction = waiting.pop()
            found[fraction] = within(upper, (fraction * total - seen) / count)
        if not waiting:
            break
        seen += count
    return [found.get(fraction) for fraction in fractions]  # the last bucket always holds the rank


def within(upper, share):
    """Seconds at `share` (0–1) of the way through the bucket that ends at `upper` ms."""
    lower = lower_bound_ms(upper)
    if upper >= OVERFLOW_MS:
        return lower / 1000
    return (lower + (upper - lower) * share) / 1000


@dataclass(frozen=True)
class Speed:
    """A task's times over a window, from its buckets: how many, their mean and percentiles."""

    count: int
    mean: float | None
    p50: float | None
    p95: float | None
    p99: float | None

    @classmethod
    def of(cls, counts, total_seconds=None):
        count = sum(counts.values())
        p50, p95, p99 = percentiles(counts, (0.5, 0.95, 0.99))
        return cls(count=count, mean=(total_seconds / count) if count and total_seconds is not None else None,
                   p50=p50, p95=p95, p99=p99)

    def as_dict(self):
        return {"count": self.count, "mean": rounded(self.mean), "p50": rounded(self.p50),
                "p95": rounded(self.p95), "p99": rounded(self.p99)}


def rounded(seconds):
    return None if seconds is None else round(seconds, 4)


def add_counts(into, counts):
    for upper, count in counts.items():
        into[upper] = into.get(upper, 0) + count
    return into


def duration(seconds):
    """A short human reading of a time in seconds: "3 ms", "1.5 s", "2 min", "1.5 h"."""
    if seconds is None:
        return "–"
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    if seconds < 60:
        return f"{seconds:.3g} s"
    if seconds < 3600:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"
