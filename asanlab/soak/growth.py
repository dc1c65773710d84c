"""Memory series -> verdicts: does it leak, how much per request, and how sure are we. Pure.

The slope is Theil-Sen's (the median of pairwise slopes, robust to a few outliers such as a page
of memory mapped at one sample) with its 95% interval, fitted on the samples after warm-up. A
trend alone is not a leak: under ASan a significant 0.1 B/request is routine. A series is a LEAK
when the interval excludes zero, the slope reaches the threshold (bytes per request) and the
fitted growth over the window reaches a minimum; STABLE when the interval lies below the
threshold; else INCONCLUSIVE, with an estimate of how many more requests would decide it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LEAK, STABLE, INCONCLUSIVE = "LEAK", "STABLE", "INCONCLUSIVE"


# The max_request advice's default budget: how much a worker may grow (bytes).
DEFAULT_BUDGET = 64 * 1024 * 1024


@dataclass(frozen=True)
class Criteria:
    """When a series is a leak. The defaults here are the soak's, everywhere (CLI, replay, reports)."""

    threshold: float = 1.0  # bytes per request
    min_growth: int = 64 * 1024  # bytes over the fitted window
    warmup: int = 0  # requests before which samples are not fitted


@dataclass
class Fit:
    slope: float  # bytes per request
    low: float
    high: float
    samples: int
    window: tuple[int, int]  # first and last request count fitted
    growth: float  # slope * window length

    def as_dict(self) -> dict:
        return {"slope": self.slope, "low": self.low, "high": self.high, "samples": self.samples,
                "window": list(self.window), "growth": self.growth}


@dataclass
class Verdict:
    verdict: str
    reason: str
    fit: Fit | None = None
    more_requests: int | None = None  # INCONCLUSIVE: about how many more would decide

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "reason": self.reason, "more_requests": self.more_requests,
                "fit": self.fit.as_dict() if self.fit else None}


def fit(points: list[tuple[int, float]], warmup: int = 0) -> Fit | None:
    """Theil-Sen slope of (requests, bytes) after warm-up; None with fewer than 3 distinct points."""
    from scipy.stats import theilslopes

    pts = sorted((x, y) for x, y in points if x >= warmup)
    if len({x for x, _ in pts}) < 3:
        return None
    xs = [float(x) for x, _ in pts]
    ys = [float(y) for _, y in pts]
    res = theilslopes(ys, xs, 0.95)
    window = (int(xs[0]), int(xs[-1]))
    return Fit(float(res.slope), float(res.low_slope), float(res.high_slope), len(pts), window,
               float(res.slope) * (window[1] - window[0]))


def judge(points: list[tuple[int, float]], criteria: Criteria, unit: str = "B") -> Verdict:
    """`unit`: what the series counts, "B" (bytes) or a name such as "fds"."""
    f = fit(points, criteria.warmup)
    if f is None:
        return Verdict(INCONCLUSIVE, "fewer than 3 samples after warm-up")
    span = f.window[1] - f.window[0]
    t = criteria.threshold
    per = f"{unit}/request"
    amount = _size if unit == "B" else (lambda n: f"{n:.0f} {unit}")
    r = "{:.1f}".format if unit == "B" else "{:.3g}".format
    if f.low > 0 and f.slope >= t:
        if f.growth >= criteria.min_growth:
            return Verdict(LEAK, f"grows {r(f.slope)} {per} (95% {r(f.low)}..{r(f.high)})", f)
        more = math.ceil((criteria.min_growth - f.growth) / f.slope)
        return Verdict(INCONCLUSIVE, f"grows {r(f.slope)} {per} but only {amount(f.growth)} in the window, "
                                     f"under the {amount(criteria.min_growth)} minimum", f, more)
    if f.high < t:
        return Verdict(STABLE, f"under {t:g} {per} (95% {f.low:.2f}..{f.high:.2f})", f)
    # The interval straddles the line it must clear. For a regression slope the interval narrows
    # about as (requests)^-1.5 at a constant sampling density.
    half = (f.high - f.low) / 2
    margin = (f.slope if f.slope >= t else t - f.slope) or half / 10
    needed = span * (half / margin) ** (2 / 3) if margin > 0 else 10 * span
    more = max(int(math.ceil(needed - span)), span // 2 or 1)
    return Verdict(INCONCLUSIVE, f"{r(f.slope)} {per}, 95% {r(f.low)}..{r(f.high)}: "
                                 f"the interval crosses {'zero' if f.slope >= t else f'{t:g} {per}'}", f, more)


def overall(verdicts: list[Verdict]) -> str:
    if any(v.verdict == LEAK for v in verdicts):
        return LEAK
    if verdicts and all(v.verdict == STABLE for v in verdicts):
        return STABLE
    return INCONCLUSIVE


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


size = _size
