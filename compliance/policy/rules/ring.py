"""``kind: ring``: an alert on a group of people rather than on one person.

A ring is a set of people linked by internal mail who contact the same listed
registrable domain within ``window`` days of one another (rings across several sites are
not supported: their episodes could not be followed from run to run). Links come from the
internal-mail edges a scheduled run keeps (keyed digests of (sender, recipient) pseudonym
pairs with counts per day, :mod:`compliance.store.edges`): evaluation computes the digest
of each candidate pair among people with evidence and looks it up; nothing else of
internal mail is known.

Roles, each person one: ``first`` (the first to contact a site of the ring),
``introducer`` (mailed a colleague of the ring who then started contacting that site
within the window), ``member`` (the rest). A ring of two is never reported: the model
refuses ``min_size`` below 3. Rings are found in scheduled runs only (an audit keeps no
internal mail, so it finds none).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from compliance.alerts import Alert
from compliance.policy.rules.base import Figures, RuleKind, RuleModel

#: The roles of a ring's people, in order of precedence.
ROLES = ("first", "introducer", "member")

#: A keyed 64-bit digest of each (sender pseudonym, recipient pseudonym) pair.
PairDigest = Callable[[pd.Series, pd.Series], np.ndarray]


class RingRule(RuleModel):
    """Alert on a group of people linked by internal mail who contact the same sites."""

    kind: Literal["ring"]
    min_size: int = Field(
        3,
        ge=3,
        description="at least this many people in the ring (a ring of two is never reported)",
    )
    min_introduced: int = Field(
        1,
        ge=1,
        description="at least this many of them started contacting a site after a colleague "
        "of the ring who contacted it before mailed them",
    )
    same_domain: Literal[True] = Field(
        True,
        description="a ring contacts one registrable domain (rings across several sites "
        "are not supported: their episodes could not be followed from run to run)",
    )


@dataclass(frozen=True)
class Links:
    """Internal mail as a ring rule may see it: the kept edges (``day``, ``pair_digest``,
    ``messages``) and the keyed digest that names a pair."""

    edges: pd.DataFrame
    digest: PairDigest


@dataclass
class FoundRing:
    """One ring found: its people by role (pseudonyms) and its rows of evidence."""

    roles: dict[str, list[str]]
    rows: np.ndarray  # positions in the evidence given to :func:`find_rings`
    domains: list[str]
    trigger_day: str
    key: str  # what its episodes are keyed on: ``ring|`` and its first site


class Ring(RuleKind):
    """Groups of people linked by internal mail (see the module docstring)."""

    name = "ring"
    model = RingRule
    order = 30

    def keys(self, rule: RingRule) -> list[str]:
        return ["reg_domain"]

    def ok(self, figures: Figures, rule: RingRule) -> Any:
        return figures.people >= rule.min_size

    def lint(self, rule: RingRule) -> list[str]:
        if rule.window > 90:
            return [
                f"a ring window of {rule.window} days keeps internal-mail edges as long; "
                "prefer 90 days or less"
            ]
        return []

    def describe(self, alert: Alert) -> str:
        size = (alert.ring or {}).get("size", alert.people)
        return f"ring of {size} on {', '.join(alert.domains)}"


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The connected component (smallest node number) of each of ``n`` nodes, given the
    edges (a, b): label propagation with pointer jumping, whole arrays per pass."""
    label = np.arange(n, dtype=np.int64)
    if not len(a):
        return label
    while True:
        low = np.minimum(label[a], label[b])
        new = label.copy()
        np.minimum.at(new, a, low)
        np.minimum.at(new, b, low)
        new = new[new]  # jump
        if np.array_equal(new, label):
            return label
        label = new


def _day_numbers(days: pd.Series) -> np.ndarray:
    return np.asarray(days.astype(str).to_numpy(), dtype="datetime64[D]").astype(np.int64)


def find_rings(evidence: pd.DataFrame, rule: RingRule, links: Links) -> list[FoundRing]:
    """The rings in ``evidence`` (columns ``person``, ``reg_domain``, ``day``).

    Nodes are (person, site) with ``same_domain`` and people otherwise; two nodes are
    linked when either person mailed the other (a kept edge) and both first contacted a
    common site within ``window`` days of each other. An *introduction* is an edge from
    a person who had contacted a site to one whose first contact with it came after the
    edge's day, within ``window`` days. Work is per distinct person and site and per
    candidate pair, on whole arrays.
    """
    if evidence.empty or links.edges.empty:
        return []
    day = _day_numbers(evidence["day"])
    frame = pd.DataFrame(
        {
            "person": evidence["person"].astype(str).to_numpy(),
            "site": evidence["reg_domain"].astype(str).to_numpy(),
            "d": day,
        }
    )
    first = frame.groupby(["person", "site"], sort=True)["d"].min().reset_index()
    pairs = first.merge(first, on="site", suffixes=("_a", "_b"))
    pairs = pairs.loc[pairs["person_a"] != pairs["person_b"]]
    pairs = pairs.loc[(pairs["d_a"] - pairs["d_b"]).abs() <= rule.window]
    if pairs.empty:
        return []
    # the digest of each distinct ordered pair, once; the kept edges by digest
    ordered = pairs[["person_a", "person_b"]].drop_duplicates().reset_index(drop=True)
    ordered["digest"] = links.digest(ordered["person_a"], ordered["person_b"])
    edges = links.edges.assign(edge_day=_day_numbers(links.edges["day"]))
    sent = ordered.merge(
        edges[["pair_digest", "edge_day"]], left_on="digest", right_on="pair_digest"
    )
    if sent.empty:
        return []
    # introductions: a (sender, knew the site by then) mailed b, who started after
    intro = pairs.merge(sent[["person_a", "person_b", "edge_day"]], on=["person_a", "person_b"])
    intro = intro.loc[
        (intro["d_a"] <= intro["edge_day"])
        & (intro["edge_day"] < intro["d_b"])
        & (intro["d_b"] - intro["edge_day"] <= rule.window)
    ]
    linked = pairs.merge(
        sent[["person_a", "person_b"]].drop_duplicates(), on=["person_a", "person_b"]
    )
    # nodes (person, site) and components: a ring is about one site (same_domain)
    node_names = pd.MultiIndex.from_frame(first[["person", "site"]])
    a = node_names.get_indexer(pd.MultiIndex.from_frame(linked[["person_a", "site"]]))
    b = node_names.get_indexer(pd.MultiIndex.from_frame(linked[["person_b", "site"]]))
    node_of_first = np.arange(len(first))
    n = int(node_of_first.max()) + 1
    component = _components(n, a.astype(np.int64), b.astype(np.int64))
    first = first.assign(ring=component[node_of_first])
    sizes = first.groupby("ring")["person"].nunique()
    wanted = sizes.index[sizes.to_numpy() >= rule.min_size]
    if not len(wanted):
        return []
    first = first.loc[first["ring"].isin(wanted)]
    ring_of = first.set_index(["person", "site"])["ring"]
    intro_ring = ring_of.reindex(pd.MultiIndex.from_frame(intro[["person_b", "site"]])).to_numpy()
    intro_from = ring_of.reindex(pd.MultiIndex.from_frame(intro[["person_a", "site"]])).to_numpy()
    intro = intro.assign(ring=intro_ring).loc[intro_ring == intro_from]
    found: list[FoundRing] = []
    row_ring = ring_of.reindex(pd.MultiIndex.from_frame(frame[["person", "site"]])).to_numpy()
    for ring_id in wanted.tolist():  # per ring found (few), not per row
        members = first.loc[first["ring"] == ring_id]
        own_intro = intro.loc[intro["ring"] == ring_id]
        introduced = own_intro["person_b"].nunique()
        if introduced < rule.min_introduced:
            continue
        earliest = members.groupby("site")["d"].transform("min")
        firsts = set(members.loc[members["d"] == earliest, "person"])
        introducers = set(own_intro["person_a"]) - firsts
        everyone = set(members["person"])
        roles = {
            "first": sorted(firsts),
            "introducer": sorted(introducers),
            "member": sorted(everyone - firsts - introducers),
        }
        starts = np.sort(members.groupby("person")["d"].min().to_numpy())
        # the day each distinct person was first introduced, earliest first
        introduced_on = np.sort(own_intro.groupby("person_b")["d_b"].min().to_numpy())
        ready = max(int(starts[rule.min_size - 1]), int(introduced_on[rule.min_introduced - 1]))
        site_first = members.sort_values(["d", "site"]).iloc[0]["site"]
        found.append(
            FoundRing(
                roles=roles,
                rows=np.flatnonzero(row_ring == ring_id),
                domains=sorted(set(members["site"])),
                trigger_day=str(np.datetime64(ready, "D")),
                key=f"ring|{site_first}",
            )
        )
    return found
