"""The fewest requests of a recording that still give one finding, at its original rate.

Delta debugging (ddmin) with the replay as the test, in three steps, each cheaper than the next
would be alone:
1. the whole recording, `tries` times: the finding's rate (it must come back at least once);
2. the hints: a request the app never answered is usually the one a worker died on, so it is tried
   alone, then with the requests before it on its connection (the state it may need);
3. ddmin over whole connections, then over single requests; the hinted request that proved needed
   stays in every candidate.

A candidate keeps the finding when it comes back at least once in `tries` replays and not
significantly less often than the whole recording did (`needed`): a finding that came back 3 times
in 10 must not fall to a rate that 10 replays can tell apart from it. Each candidate is judged once;
the kept requests are then replayed `tries` times in all, so their rate is said beside the whole
recording's. Pure: the replay is a function given in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import UsageError
from ..events import Event, Reporter, null_reporter
from ..run.traffic import HttpRequest, WsMessage

Key = tuple[int, int]  # (connection, index) of a request or a WebSocket message
Unit = HttpRequest | WsMessage
# Replays the requests whose keys are given in a fresh container: did the finding come back?
Test = Callable[[set[Key]], bool]


@dataclass
class Shrunk:
    requests: list[Unit]
    hits: int  # of `tries` replays of the kept requests
    original_hits: int  # of `tries` replays of the whole recording
    tries: int
    candidates: int  # sets of requests judged
    replays: int


def minimize(requests: list[Unit], test: Test, *, tries: int = 1,
             reporter: Reporter = null_reporter) -> Shrunk:
    order = {(r.connection, r.index): n for n, r in enumerate(requests)}
    judged: dict[frozenset, tuple[int, int]] = {}  # candidate -> (hits, replays made)
    replays = 0
    needed = 1  # hits a candidate must reach in `tries` replays: set from the whole recording's in step 1

    def hits(subset: list[Unit]) -> int:
        nonlocal replays
        key = frozenset((r.connection, r.index) for r in subset)
        if key not in judged:
            got = made = 0
            while made < tries and needed > got >= needed - (tries - made):  # stop once decided either way
                replays += 1
                made += 1
                got += test(set(key))
            judged[key] = (got, made)
            reporter(Event("reproduce.minimize", f"try {len(judged)} ({replays} replays): {len(subset)} request(s): "
                                                 f"{'still there' if got >= needed else 'gone'}"
                                                 + (f" ({got} of {tries})" if tries > 1 else "")))
        return judged[key][0]

    def keeps(subset: list[Unit]) -> bool:
        return bool(subset) and hits(subset) >= needed

    whole = 0
    for _ in range(tries):  # step 1: every try, for the rate
        replays += 1
        whole += test({(r.connection, r.index) for r in requests})
    judged[frozenset(order)] = (whole, tries)
    reporter(Event("reproduce.minimize", f"the whole recording ({len(requests)} requests): came back "
                                         f"{whole} of {tries}"))
    if not whole:
        raise UsageError(f"the finding did not come back from the whole recording in {tries} replay(s): "
                         "nothing to shrink",
                         hint="see how often it comes back with `asanlab reproduce ID --runs 10`, then give "
                              "--tries")
    needed = hits_needed(whole, tries)

    def sort(rs) -> list[Unit]:
        return sorted(rs, key=lambda r: order[(r.connection, r.index)])

    fixed: list[Unit] = []
    rest = list(requests)
    for u in [r for r in requests if r.unanswered][:3]:  # step 2
        if keeps([u]):
            fixed, rest = [u], []
            break
        prefix = [r for r in requests if r.connection == u.connection and r.index <= u.index]
        if keeps(prefix):  # the whole recording's verdict when it is all of it
            fixed, rest = [u], [r for r in prefix if r is not u]
            break

    def with_fixed(subset: list[Unit]) -> bool:
        return keeps(sort(fixed + subset))

    if rest:  # step 3
        by_conn: dict[int, list[Unit]] = {}
        for r in rest:
            by_conn.setdefault(r.connection, []).append(r)
        if len(by_conn) > 1:
            units = _ddmin(list(by_conn.values()), lambda us: with_fixed([r for u in us for r in u]))
            rest = [r for u in units for r in u]
        rest = _ddmin([[r] for r in rest], lambda us: with_fixed([u[0] for u in us]))
        rest = [u[0] for u in rest]
    kept = sort(fixed + rest)
    key = frozenset((r.connection, r.index) for r in kept)
    got, made = judged[key]
    for _ in range(tries - made):  # its rate in as many replays as the whole recording had
        replays += 1
        got += test(set(key))
    return Shrunk(kept, got, whole, tries, len(judged), replays)


def hits_needed(whole: int, tries: int, alpha: float = 0.05) -> int:
    """The fewest hits in `tries` replays (at least one) that Fisher's exact test (one-sided, at
    `alpha`) cannot tell from `whole` hits in as many: below it, the candidate's rate is lower."""
    from scipy.stats import fisher_exact

    for k in range(1, whole + 1):
        if fisher_exact([[k, tries - k], [whole, tries - whole]], alternative="less").pvalue >= alpha:
            return k
    return max(whole, 1)


def _ddmin(items: list, keeps: Callable[[list], bool]) -> list:
    """Zeller's ddmin: a 1-minimal sublist of items (order kept) for which keeps() holds, given
    that it holds for all of them. With a fixed part, the empty sublist may hold too."""
    if keeps([]):
        return []
    idx, n = list(range(len(items))), 2

    def pick(ix: list[int]) -> list:
        return [items[i] for i in ix]

    while len(idx) >= 2:
        chunks = [idx[i * len(idx) // n:(i + 1) * len(idx) // n] for i in range(n)]
        for chunk in chunks:
            if chunk and keeps(pick(chunk)):
                idx, n = chunk, 2
                break
        else:
            for chunk in chunks:
                drop = set(chunk)
                rest = [i for i in idx if i not in drop]
                if chunk and rest and keeps(pick(rest)):
                    idx, n = rest, max(n - 1, 2)
                    break
            else:
                if n >= len(idx):
                    break
                n = min(len(idx), n * 2)
    return pick(idx)
