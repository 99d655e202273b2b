"""The contract of a rule kind: its model, how it is evaluated and how tests see it.

Evaluation (:mod:`compliance.policy.evaluate`) groups a policy's evidence by the kind's
:meth:`RuleKind.keys` and asks its one threshold test, :meth:`RuleKind.ok`, three
times, on the same figures at three scales, so that a kind states its thresholds once:

* over each group's whole period, to drop groups that can never qualify (figures are
  pandas Series, one value per group);
* over the window ending on each active day of each group (NumPy arrays);
* over the exact window an episode would start with (plain numbers).

The figures are :class:`Figures`: ``messages``, ``days`` (distinct days with evidence),
``people`` (distinct people, one person once across key epochs where the directory
links them) and ``sent`` (the messages among them that a person sent, or tried to, as
against replies they received). They are computed only when a kind reads them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self

from pydantic import Field

from compliance.alerts import Alert
from compliance.policy.fields import Days, Severity, Strict


class RuleModel(Strict):
    """What every rule has: a name, a window and a severity; ``kind`` names its kind."""

    if TYPE_CHECKING:  # each kind's model declares it, as a Literal of its name
        kind: str
    id: str | None = Field(None, description="name of the rule within the policy")
    window: Days = Field(description="days looked at together, e.g. 30d")
    severity: Severity = Field(description="low, medium, high or critical")

    def for_evidence(self, evidence: str) -> Self:
        """The rule as a policy whose ``match.evidence`` is ``evidence`` evaluates it (a
        kind may fill a default that depends on it); by default, itself."""
        return self


class Figures(Protocol):
    """What a threshold test may read (see the module docstring)."""

    @property
    def messages(self) -> Any: ...

    @property
    def days(self) -> Any: ...

    @property
    def people(self) -> Any: ...

    @property
    def sent(self) -> Any: ...


class RuleKind(ABC):
    """One kind of rule. Adding a kind is one module with a subclass and its model, and
    one entry point in the ``compliance.rule_kinds`` group."""

    #: the ``kind:`` a policy writes
    name: ClassVar[str]
    #: the rule's pydantic model (its ``kind`` field a ``Literal`` of :attr:`name`)
    model: ClassVar[type[RuleModel]]
    #: order among kinds in the policy schema and its messages (built-ins first)
    order: ClassVar[int] = 100
    #: whether an alert is on one person (its pseudonym is the alert's person)
    on_person: ClassVar[bool] = False

    @abstractmethod
    def keys(self, rule: Any) -> list[str]:
        """The columns that make a group (``person``; ``unit`` and maybe ``reg_domain``)."""

    @abstractmethod
    def ok(self, figures: Figures, rule: Any) -> Any:
        """Whether figures meet the rule's thresholds (element-wise for arrays)."""

    def lint(self, rule: Any) -> list[str]:
        """Warnings for a valid rule likely to hurt someone (each a sentence); works-council
        lint reports them as WC013. Its errors read fields by name, whatever the kind:
        ``window`` (WC002); ``min_messages`` and ``min_days`` of a kind :attr:`on_person`
        (WC001); ``min_people`` (WC009)."""
        return []

    def describe(self, alert: Alert) -> str:
        """Who an alert is on, as a policy test reports it."""
        return f"person {alert.person}" if alert.person else f"unit {alert.org_unit}"
