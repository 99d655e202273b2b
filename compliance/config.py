"""The configuration file (``compliance.yaml``): model, loading and path resolution.

Relative paths are resolved against the folder of the config file. Secrets are never
written in it: the pseudonymisation key comes from the environment (see
:mod:`compliance.privacy`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import getpass
import hashlib
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from compliance.errors import ConfigError, PolicyError, Problem
from compliance.events import TIMESTAMP_FLOOR, TimestampRange
from compliance.feeds import FEED_FORMATS, FeedSpec
from compliance.options import unknown_key
from compliance.policy.fields import Days
from compliance.policy.fields import days as _days
from compliance.yamlfile import locate, parse_yaml, read_yaml_text

#: The delivery types a deterrence notice can be sent over (to one person, by mail).
NOTICE_CHANNEL_TYPES = ("smtp", "graph-mail")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Organisation(_Strict):
    """Who is internal."""

    domains: list[str] = Field(min_length=1, description="accepted domains; subdomains included")


class EntraDirectory(_Strict):
    """Org units read from Entra ID with the credentials of an ``m365`` source."""

    type: Literal["entra"] = Field(description="entra: the org units come from Entra ID")
    source: str = Field(description="the m365 source whose app registration reads /users")
    org_unit: list[str] = Field(
        ["department"],
        min_length=1,
        description="user attributes joined, outermost first, into the org-unit path",
    )

    @field_validator("org_unit")
    @classmethod
    def _attributes(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,63}", name):
                raise ValueError(f"{name!r} is not a user attribute name")
        return value


class SourceConfig(BaseModel):
    """A log source; options beyond name and type belong to its connector."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="the source's own name: its bookmark, logs and `--source` use it",
    )
    type: str = Field(
        description="the source type: a built-in one or a plugin's (`compliance sources types`)"
    )

    def options(self) -> dict[str, Any]:
        """The connector's own options."""
        return dict(self.model_extra or {})


class FeedSignature(_Strict):
    """A detached minisign signature the download must carry."""

    public_key: str = Field(
        description="the publisher's minisign public key (the base64 line of its .pub file)"
    )
    url: str | None = Field(
        None, description="where the signature is fetched; default: the feed's url + .minisig"
    )

    @field_validator("public_key")
    @classmethod
    def _minisign_key(cls, value: str) -> str:
        lines = [ln.strip() for ln in value.strip().splitlines() if ln.strip()]
        line = lines[-1] if lines else ""  # the whole .pub file pasted: its key line
        try:
            raw = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 42 or raw[:2] != b"Ed":
            raise ValueError(
                "must be a minisign public key: the base64 line of its .pub file (RW...)"
            )
        return line


class FeedBounds(_Strict):
    """How much one update may change a feed before it is refused as suspect."""

    max_bytes: int = Field(
        512 * 1024 * 1024, ge=1, description="refuse a download (unpacked) larger than this"
    )
    min_entries: int = Field(1, ge=0, description="refuse a version with fewer entries")
    max_shrink: float = Field(
        0.5,
        ge=0,
        le=1,
        description="refuse a version that lost more than this share of the entries of the "
        "last good one (0.5: half)",
    )
    max_growth: float = Field(
        3.0,
        ge=0,
        description="refuse a version that grew by more than this multiple of the last good "
        "one's entries (3.0: from 100 to more than 400)",
    )


_FEED_CATEGORY = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class FeedConfig(_Strict):
    """A categorised domain feed, or an allow-list, with where it comes from."""

    path: str = Field(description="the file or folder read (where `feeds update` installs it)")
    category: str | None = Field(
        None,
        description="the category of the feed's entries; a CSV's category column takes "
        "precedence, and without it a UT1 feed takes each folder's name",
    )
    name: str | None = Field(
        None,
        description="the feed name each entry keeps; default: the file or folder name "
        "without its extension",
    )
    format: str | None = Field(
        None, description="plain, hosts, adblock, dnsmasq, csv or a plugin's; default: detected"
    )
    kind: Literal["list", "allow"] = Field(
        "list",
        description="list: its domains count for their categories; allow: its domains (with "
        "their subdomains) are never matched, whatever another feed says",
    )
    url: str | None = Field(
        None, description="where `compliance feeds update` fetches it (https only)"
    )
    licence: str | None = Field(None, description="the licence the list is published under")
    attribution: str | None = Field(None, description="who publishes it, as reports credit them")
    sha256: str | None = Field(
        None, description="a pinned SHA-256 of the download: any other content is refused"
    )
    signature: FeedSignature | None = Field(
        None, description="a minisign signature the download must carry"
    )
    categories: dict[str, str] = Field(
        default_factory=dict,
        description="the feed's own categories (UT1 folders such as adult, dating, "
        "mixed_adult) mapped to policy categories; with a mapping, unmapped ones are dropped",
    )
    bounds: FeedBounds = Field(default_factory=FeedBounds)
    update_every: Days | None = Field(
        None,
        description="with url: the job fetches it when its last good copy is this old "
        "(1d, 7d); default: only `compliance feeds update` does",
    )

    @field_validator("url", "signature")
    @classmethod
    def _https(cls, value: Any) -> Any:
        url = value.url if isinstance(value, FeedSignature) else value
        if url is not None and not str(url).lower().startswith("https://"):
            raise ValueError("must be an https:// URL (a feed decides who gets an alert)")
        return value

    @field_validator("sha256")
    @classmethod
    def _digest(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise ValueError("must be 64 hexadecimal digits (a SHA-256)")
        return None if value is None else value.lower()

    @field_validator("categories")
    @classmethod
    def _mapping(cls, value: dict[str, str]) -> dict[str, str]:
        mapped = {}
        for own, policy in value.items():
            if not _FEED_CATEGORY.match(str(policy)):
                raise ValueError(
                    f"{own}: {policy!r} is not a category name (lower case letters, digits, "
                    "'_', '.', '-')"
                )
            mapped[str(own).strip().lower()] = str(policy)
        return mapped

    @model_validator(mode="after")
    def _allow_has_no_categories(self) -> FeedConfig:
        if self.kind == "allow" and self.categories:
            raise ValueError("categories: an allow-list has no categories to map")
        if self.update_every is not None and self.url is None:
            raise ValueError("update_every: needs url (where the feed is fetched from)")
        return self

    @property
    def feed_name(self) -> str:
        """The feed's name: ``name``, else the file or folder name without its extension."""
        return self.name or Path(self.path).stem

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        if value is not None and value not in FEED_FORMATS.names():
            raise PydanticCustomError(
                "feed_format",
                "unknown feed format {value!r}; known: {known}",
                {"value": value, "known": ", ".join(FEED_FORMATS.names())},
            )
        return value


class DeliveryConfig(BaseModel):
    """A channel reports are sent over; options beyond name and type belong to it."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="the channel's own name, as `send_to` names it",
    )
    type: str = Field(
        description="the delivery type: a built-in one or a plugin's (`compliance plugins`)"
    )

    def options(self) -> dict[str, Any]:
        """The channel's own options."""
        return dict(self.model_extra or {})


ReportFormat = Literal["html", "json", "csv", "pdf"]


def _html_and_json() -> list[ReportFormat]:
    return ["html", "json"]


class ReportSchedule(_Strict):
    """A named report written when due (beside the report every run writes)."""

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="names the report and its files"
    )
    every: Literal["day", "week", "month"] = Field(
        description="when it is due: daily; weekly (7 days after the previous one); "
        "monthly (in a new calendar month)"
    )
    period: Days | None = Field(
        None, description="days covered; default: 1, 7 or 30 for day, week or month"
    )
    audience: Literal["team", "broad"] = Field(
        "team", description="team: pseudonymous alerts; broad: noisy counts only"
    )
    formats: list[ReportFormat] = Field(
        default_factory=_html_and_json,
        description="the files written (pdf: the HTML report printed by a headless browser)",
    )
    send_to: list[str] = Field(
        default_factory=list, description="names of configured deliveries it is sent over"
    )
    when_nothing_new: Literal["send", "skip"] = Field(
        "send",
        description="send: a report with no new, updated or ended alert is still sent, "
        "its message saying so in one line; skip: it is written but not sent (logged)",
    )

    @field_validator("name")
    @classmethod
    def _not_the_run_report(cls, value: str) -> str:
        if value == "report":
            raise ValueError("'report' names the report every run writes: choose another name")
        return value

    @property
    def days(self) -> int:
        """Days covered."""
        return self.period or {"day": 1, "week": 7, "month": 30}[self.every]


class Reports(_Strict):
    """Where reports go, what they cover and who reads them."""

    dir: str = Field("reports", description="the folder reports are written to")
    period: int = Field(30, description="days covered by each report")
    min_group_size: int = Field(
        5, ge=2, description="org units smaller than this roll up; smaller cells are suppressed"
    )
    formats: list[ReportFormat] = Field(
        ["html"],
        description="the files written (pdf: the HTML report printed by a headless browser)",
    )
    browser: str | None = Field(
        None,
        description="the headless Chromium (Chrome, Edge) that prints PDF reports and draws "
        "the charts of mail summaries: a path or command; default: the first found on PATH",
    )
    audience: Literal["team", "broad"] = Field(
        "team",
        description="team: the ethics team (pseudonymous alerts); broad: leadership and "
        "others (differentially private counts only, no alerts)",
    )
    epsilon: float = Field(1.0, gt=0, le=10, description="privacy loss of one broad report")
    dp_budget: float = Field(
        6.0, gt=0, description="total epsilon broad reports may spend within dp_budget_days"
    )
    dp_budget_days: int = Field(365, ge=1, description="the period of dp_budget, in days")
    message_cap: int = Field(
        10, ge=1, le=1000, description="messages counted per person in broad reports"
    )
    send_to: list[str] = Field(
        default_factory=list,
        description="names of configured deliveries each report is sent over, exactly once",
    )
    schedules: list[ReportSchedule] = Field(
        default_factory=list,
        description="named reports written when due (daily, weekly, monthly), each with "
        "its audience, formats and deliveries",
    )
    mail_body: Literal["attachment", "summary"] = Field(
        "attachment",
        description="attachment: a team report travels only as its attached files, the "
        "message says nothing of its content; summary: the headline figures in the body",
    )

    _period = field_validator("period", mode="before")(_days)

    def wants_pdf(self) -> bool:
        """Whether any report (the run's, a schedule's) is written as PDF."""
        return "pdf" in self.formats or any("pdf" in s.formats for s in self.schedules)


class Privacy(_Strict):
    """How pseudonyms are made."""

    key_rotation: Literal["never", "yearly", "quarterly", "monthly"] = Field(
        "quarterly",
        description="pseudonyms change each epoch; windows do not join across epochs",
    )


class EnvIdentity(_Strict):
    """The acting person is named by an environment variable (set by a login wrapper)."""

    env: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="the environment variable that names the acting person",
    )


class Accountability(_Strict):
    """Who may approve re-identification, and how the acting person is known."""

    approvers: list[str] = Field(
        default_factory=list, description="people who may approve a reveal (user names)"
    )
    min_approvals: int = Field(2, ge=2, description="distinct approvals a reveal needs")
    identity: Literal["os"] | EnvIdentity = Field(
        "os", description="os: the operating-system user; or {env: NAME}"
    )


class Schedule(_Strict):
    """When `compliance schedule` runs the job."""

    every_minutes: int | None = Field(
        None, ge=5, le=1440, description="run every this many minutes; default: 60"
    )
    daily_at: str | None = Field(
        None,
        pattern=r"^\d{2}:\d{2}$",
        description="instead, run once a day at this local time (HH:MM)",
    )
    lock: str = Field(
        "compliance.lock",
        description="the run lock: one run at a time (`run` and `sources reset` take it too)",
    )
    fail_when_idle: bool = Field(
        True,
        description="a run that reads nothing new says so and exits 4; set false where "
        "inputs arrive less often than the job runs (a run that rejects every row it reads "
        "fails either way)",
    )


class Engine(_Strict):
    """Where the per-chunk stages run."""

    type: Literal["local", "dask"] = Field(
        "local", description="local: in this process; dask: read units on a Dask cluster"
    )
    scheduler: str | None = Field(
        None, description="address of an existing Dask scheduler; default: a local cluster"
    )


class Retention(_Strict):
    """How long things are kept."""

    dedup_days: int = Field(100, ge=7, description="keep message keys this long (> source reach)")
    events_days: int = Field(
        180, ge=7, description="keep minimised matched events and daily totals this long"
    )
    alerts_days: int = Field(365, ge=7, description="keep alerts without a case this long")
    cases_days: int = Field(730, ge=1, description="keep closed cases this long after closing")

    @model_validator(mode="after")
    def _alerts_outlive_events(self) -> Retention:
        if self.alerts_days < self.events_days:
            raise ValueError(
                "alerts_days must be at least events_days (else old events could alert again)"
            )
        return self


_AHEAD = re.compile(r"^\s*([0-9]{1,4})\s*([hdw])\s*$")


class Ingest(_Strict):
    """What a row's time may be; rows outside are rejected as ``bad_timestamp``."""

    earliest: dt.date = Field(
        dt.date(1990, 1, 1), description="rows dated before this day (UTC) are rejected"
    )
    latest_ahead: dt.timedelta = Field(
        dt.timedelta(days=1),
        description="rows dated later than now plus this (12h, 1d, 2w; at most 366 days) "
        "are rejected: a gateway clock a little ahead is normal",
    )

    @field_validator("earliest")
    @classmethod
    def _earliest(cls, value: dt.date) -> dt.date:
        if not TIMESTAMP_FLOOR.date() <= value <= dt.datetime.now(dt.UTC).date():
            raise ValueError(f"must be a day from {TIMESTAMP_FLOOR.date()} to today")
        return value

    @field_validator("latest_ahead", mode="before")
    @classmethod
    def _ahead(cls, value: object) -> dt.timedelta:
        if isinstance(value, bool):
            raise ValueError("must be a duration such as 12h, 1d or 2w")
        if isinstance(value, int):
            number, unit = value, "days"
        elif isinstance(value, str) and (found := _AHEAD.match(value)):
            number = int(found.group(1))
            unit = {"h": "hours", "d": "days", "w": "weeks"}[found.group(2)]
        else:
            raise ValueError("must be a duration such as 12h, 1d or 2w")
        hours = number * {"hours": 1, "days": 24, "weeks": 168}[unit]
        if not 0 <= hours <= 366 * 24:  # checked before any timedelta can overflow
            raise ValueError("must be between 0 and 366 days")
        return dt.timedelta(hours=hours)

    def timestamp_range(self, today: dt.date | None = None) -> TimestampRange:
        """The range for the pipeline's context; ``today``: a run's own day (``--today``),
        whose end counts as now when it is later than the clock."""
        earliest = dt.datetime.combine(self.earliest, dt.time(), dt.UTC)
        now = None
        if today is not None:
            now = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), dt.UTC)
        return TimestampRange(earliest, self.latest_ahead, now)


class LintException(_Strict):
    """An approved exception to a works-council lint check, recorded in the audit log."""

    policy: str = Field(description="the policy's id")
    check: str = Field(description="the lint check's id, e.g. WC003")
    rule: str | None = Field(None, description="only this rule of the policy (default: any)")
    approved_by: list[str] = Field(
        min_length=1, description="who approved it (for example the works council's chair)"
    )
    approved_on: dt.date = Field(description="the day it was approved")
    reason: str = Field(min_length=10, description="why the exception is justified")


class WorksCouncilApproval(_Strict):
    """The works council's approval of deterrence notices: without it none is sent."""

    approved_by: list[str] = Field(
        min_length=1, description="who approved (for example the works council's chair)"
    )
    approved_on: dt.date = Field(description="the day it was approved")
    reference: str = Field(min_length=3, description="the agreement or minutes it is recorded in")


class NoticeSettings(_Strict):
    """Deterrence notices (a policy's ``notice:``): how they are sent, and their limits."""

    channel: str = Field(
        description="the delivery that sends them: a configured delivery of type smtp or "
        "graph-mail (its From address is the sender; its `to` is not used: each notice "
        "goes to the one person it is for)"
    )
    works_council_approval: WorksCouncilApproval | None = Field(
        None,
        description="required: without it no notice is decided or sent (the job warns)",
    )
    organisation_name: str = Field(
        min_length=1, max_length=200, description="the organisation's name, as notices say it"
    )
    help_contacts: list[str] = Field(
        default_factory=list,
        max_length=10,
        description="lines naming where to find confidential help (an employee "
        "assistance programme, a counselling line), shown in every notice",
    )
    subject: str = Field(
        "A reminder of the acceptable-use policy for corporate mail",
        min_length=1,
        max_length=200,
        description="the notice's subject: it names no site, no figure and no day",
    )
    reply_to: str | None = Field(
        None, description="a Reply-To address for notices (default: the channel's)"
    )
    max_per_day: int = Field(
        50, ge=1, le=10_000, description="at most this many notices are sent a day; the rest wait"
    )

    @field_validator("subject")
    @classmethod
    def _neutral_subject(cls, value: str) -> str:
        if any(c in value for c in "\r\n\0"):
            raise ValueError("must be one line")
        if re.search(r"\d", value) or re.search(r"\w\.[A-Za-z]{2,}\b", value):
            raise ValueError("must name no figure, day or domain")
        return value


class Config(_Strict):
    """The whole configuration."""

    organisation: Organisation
    directory: str | EntraDirectory | None = Field(
        None, description="a directory CSV path, or {type: entra, source: NAME, org_unit: [...]}"
    )
    sources: list[SourceConfig] = Field(min_length=1)
    feeds: list[FeedConfig] = Field(min_length=1)
    policies: list[str] = Field(min_length=1, description="policy files, or folders of them")
    store: str = Field("compliance.db", description="the SQLite store")
    feed_cache: str | bool | None = Field(
        None,
        description="folder of compiled feeds (public data only); default: feed-cache next "
        "to the store; false: none",
    )
    engine: Engine = Engine()
    reports: Reports = Reports()
    schedule: Schedule = Schedule()
    retention: Retention = Retention()
    privacy: Privacy = Privacy()
    accountability: Accountability = Accountability()
    ingest: Ingest = Ingest()
    deliveries: list[DeliveryConfig] = Field(
        default_factory=list, description="channels reports are sent over (see reports.send_to)"
    )
    lint_exceptions: list[LintException] = Field(
        default_factory=list,
        description="approved exceptions to works-council lint checks (each logged in the "
        "audit log when it takes effect)",
    )
    retro_hunt_days: int | None = Field(
        None,
        ge=1,
        le=366,
        description="off by default; N: keep for N days keyed digests of the external "
        "domains each pseudonymous person exchanged mail with, so that a domain a feed lists "
        "later is found in that earlier traffic",
    )

    notices: NoticeSettings | None = Field(
        None,
        description="deterrence notices: the channel, the works council's approval, the "
        "organisation's name, help contacts and the daily limit (policies opt in with "
        "`notice:`)",
    )

    base_dir: Path = Field(Path("."), exclude=True)
    file: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _deliveries_named(self) -> Config:
        names = [d.name for d in self.deliveries]
        if len(set(names)) != len(names):
            raise ValueError("two deliveries have one name: give each its own 'name'")
        unknown = [n for n in self.reports.send_to if n not in names]
        if unknown:
            raise ValueError(f"reports.send_to names no configured delivery: {', '.join(unknown)}")
        schedules = [s.name for s in self.reports.schedules]
        if len(set(schedules)) != len(schedules):
            raise ValueError("two report schedules have one name: give each its own 'name'")
        if self.notices is not None:
            found = next((d for d in self.deliveries if d.name == self.notices.channel), None)
            if found is None:
                raise ValueError(
                    f"notices.channel names no configured delivery: {self.notices.channel}"
                )
            if found.type not in NOTICE_CHANNEL_TYPES:
                raise ValueError(
                    f"notices.channel {found.name!r} is a {found.type} delivery: notices go "
                    f"by mail ({' or '.join(NOTICE_CHANNEL_TYPES)})"
                )
        for schedule in self.reports.schedules:
            unknown = [n for n in schedule.send_to if n not in names]
            if unknown:
                raise ValueError(
                    f"reports.schedules {schedule.name}: send_to names no configured "
                    f"delivery: {', '.join(unknown)}"
                )
        return self

    def path(self, value: str) -> Path:
        """A config path resolved against the config file's folder."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def feed_cache_folder(self) -> Path | None:
        """Where compiled feeds are kept: the configured folder, next to the store, or none."""
        if self.feed_cache is False:
            return None
        if isinstance(self.feed_cache, str):
            return self.path(self.feed_cache)
        return self.path(self.store).parent / "feed-cache"

    def feed_specs(self) -> list[FeedSpec]:
        """The configured feeds as specs (with their kind, mapping and provenance)."""
        return [self.feed_spec(f) for f in self.feeds]

    def feed_spec(self, feed: FeedConfig) -> FeedSpec:
        """One configured feed as a spec, its path resolved."""
        return FeedSpec(
            self.path(feed.path),
            feed.category,
            feed.name,
            feed.format,
            kind=feed.kind,
            url=feed.url,
            licence=feed.licence,
            attribution=feed.attribution,
            categories=dict(feed.categories),
        )


def current_actor(accountability: Accountability) -> str:
    """The person acting now, from the configured identity source."""
    identity = accountability.identity
    if identity == "os":
        try:
            return getpass.getuser()
        except (KeyError, OSError):
            raise ConfigError("cannot tell the operating-system user; set identity") from None
    value = os.environ.get(identity.env, "").strip()
    if not value:
        raise ConfigError(f"the acting person is unknown: {identity.env} is not set")
    if "@" in value or any(c.isspace() for c in value):
        # it is written into the store and the append-only audit log for good: a mail
        # address or a full name there is what no note may carry
        raise ConfigError(
            f"{identity.env} must be a user name (as accountability.approvers lists them), "
            "not a mail address or a name written out"
        )
    return value


def config_digest(path: Path) -> str:
    """SHA-256 of the config file (its changes are logged)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_config(path: Path) -> Config:
    """Load and validate a config file; problems name file, line and field."""
    try:
        text, _ = read_yaml_text(path)  # size-capped, UTF-8 checked, located problems
        data, lines = parse_yaml(text, str(path))
    except PolicyError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the config must be a mapping of sections")
    try:
        config = Config.model_validate(
            {**data, "base_dir": path.parent.resolve(), "file": path.resolve()}
        )
    except ValidationError as exc:
        problems = [
            Problem(
                str(path),
                locate(lines, err["loc"]),
                ".".join(str(p) for p in err["loc"]),
                unknown_key(Config, err["loc"]) if err["type"] == "extra_forbidden" else err["msg"],
            )
            for err in exc.errors()
        ]
        raise ConfigError("\n".join(str(p) for p in problems)) from None
    names = [s.name for s in config.sources]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: every source needs its own name")
    if isinstance(config.directory, EntraDirectory):
        named = {s.name: s.type for s in config.sources}
        if named.get(config.directory.source) != "m365":
            raise ConfigError(
                f"{path}:{locate(lines, ('directory', 'source'))}: directory.source: "
                f"{config.directory.source!r} is not the name of an m365 source"
            )
    return config
