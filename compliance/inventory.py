"""The privacy inventory: what is collected, kept, for how long, and who sees what.

Built from the live configuration and the store's schema (every table the
migrations create must be described here, or the inventory refuses to print), so
that the text a data-protection impact assessment needs is never out of date.
"""

from __future__ import annotations

from compliance.config import Config, EntraDirectory
from compliance.errors import ComplianceError
from compliance.store import describe

#: What each table holds and whether it concerns monitored people (P: pseudonymous).
TABLES: dict[str, tuple[str, str]] = {
    "events": ("P", "matched messages only: pseudonym, org unit, external domain, day, status"),
    "daily_totals": ("-", "messages per day, org unit and direction (no person)"),
    "seen_keys": (
        "-",
        "keyed 64-bit hashes of counted messages, packed per day, for de-duplication "
        "(no person, address or domain)",
    ),
    "retro_contacts": (
        "P",
        "only with retro_hunt_days: external messages no feed matched when read: event key, "
        "pseudonym, org unit, day and hour, direction, status, source, key epoch and a keyed "
        "64-bit digest of the registrable domain (never the domain, host or address); "
        "internal mail never",
    ),
    "alerts": (
        "P",
        "alerts, one per episode: policy, rule, pseudonym (person rules) or org unit, counts, "
        "first and last day, triage state, reviewer and dismissal reason, the verification "
        "mark and, for a ring, its size, units, domains, role counts and its people's "
        "pseudonyms by role (for cases)",
    ),
    "alert_updates": ("P", "each run's figures of each alert's episode (counts and days)"),
    "triage": ("P", "triage steps: alert, who, when, from and to state, reason, checked note"),
    "reports": ("-", "which team reports were written, and which alert updates they showed"),
    "cases": (
        "P",
        "cases on alerts: alert id, requester, reason, outcome; for a ring, the pseudonym "
        "of the one person the case is about",
    ),
    "case_approvals": ("-", "who approved which case, when"),
    "audit_log": ("-", "hash-chained log of runs, reports, case steps, reveals, changes"),
    "key_epochs": ("-", "fingerprints of the key of each epoch (never the key)"),
    "dp_releases": ("-", "noisy counts released to broad audiences and the epsilon spent"),
    "runs": ("-", "each run: times, counts, policy and feed versions"),
    "bookmarks": ("-", "how far each source has been read"),
    "ingested_units": ("-", "content hashes of files and windows read (never names)"),
    "rejected_rows": ("-", "rejected-row counts by reason"),
    "skipped_rows": ("-", "counts of rows read and set aside (not rejected) by reason"),
    "meta": ("-", "store settings: key fingerprint, last versions seen"),
    "schema_migrations": ("-", "schema versions applied"),
    "feed_versions": (
        "-",
        "each feed version `feeds update` installed: feed name, kind, source URL, fetch "
        "time, size, SHA-256 of the download and of the content, entries per category, "
        "ETag, Last-Modified, licence, attribution, what was verified (public data only)",
    ),
    "feed_updates": (
        "-",
        "each feed update attempt: feed name, time, operator, URL, outcome (installed, "
        "not modified, refused, failed) and why",
    ),
    "internal_edges": (
        "-",
        "only with ring rules: internal mail from people with evidence in the rings' "
        "longest window to colleagues, as keyed digests of the (sender, recipient) "
        "pseudonym pair with messages per day, deleted after that window (never an "
        "address, never the two pseudonyms)",
    ),
    "notices": (
        "P",
        "only with deterrence notices: each notice decided (sent or held back for the "
        "holdout): policy, alert, pseudonym and key epoch, day, arm, template name and "
        "hash, channel, state, attempts, the server's receipt and a hash of the message "
        "sent; never the recipient's address, never the message's text",
    ),
    "outbox": (
        "-",
        "each delivery of a report: report, period, channel name, file names, state, "
        "attempts, the channel's receipt and a hash of what was sent (no content, no "
        "recipient)",
    ),
}

_SOURCE_FIELDS = {
    "m365": (
        "Microsoft Graph message trace: receivedDateTime, senderAddress, recipientAddress, "
        "status, size, id. The API also returns subject, messageId, fromIP and toIP: they "
        "are dropped while each page is parsed, never kept or written."
    ),
    "exchange": (
        "Exchange Online exports: time, sender, recipient, status, size, message id. "
        "Subjects and IP columns are never converted out of the file reader."
    ),
    "generic": "the mapped columns only: time, sender, recipient, status, size, message id.",
}


def schema() -> dict[str, list[str]]:
    """Every table of the current schema with its columns."""
    return describe()


def retro_hunt_notice(config: Config) -> list[str]:
    """The inventory's section on retro-hunt: what it adds to what is kept, and whether
    it is on in ``config``."""
    days = config.retro_hunt_days
    if not days:
        return [
            "## Retro-hunt",
            "",
            "Retro-hunt is **off** (`retro_hunt_days` is not set): mail no feed matched when "
            "it was read is only counted in `daily_totals` (with its keyed message key in "
            "`seen_keys`, to count it once); nothing else of it is kept.",
            "",
        ]
    kept = min(days, config.retention.events_days)
    return [
        "## Retro-hunt",
        "",
        f"Retro-hunt is **on** (`retro_hunt_days: {days}`). For {kept} days, every external "
        "message that no feed matched when it was read is kept in `retro_contacts`: the "
        "pseudonym and org unit of the internal person, the day and hour, direction, "
        "delivery status and a keyed 64-bit digest of the external party's registrable "
        "domain. The domain, host and address are never kept, and internal mail never. The "
        "digest key is derived from the pseudonymisation key: without it a digest cannot be "
        "tested against a list of domains; with it, the job can, which is how it finds them. "
        "Purpose: when a feed lists a domain later, the "
        "next run finds the earlier traffic with it within those days and evaluates it as "
        "if the listing had been there; the messages found then become events (with the "
        "listed domain) and leave `retro_contacts`. Older contacts are deleted every run; "
        "removing `retro_hunt_days` deletes them all (logged).",
        "",
    ]


def deterrence_notices(config: Config) -> list[str]:
    """The inventory's section on deterrence notices: whether they can be sent, what
    each one uses and what is kept of it."""
    settings = config.notices
    head = ["## Deterrence notices", ""]
    if settings is None:
        return [
            *head,
            "Deterrence notices are **off** (no `notices:` section): nobody is sent one.",
            "",
        ]
    approval = settings.works_council_approval
    state = (
        f"**approved** by {', '.join(approval.approved_by)} on {approval.approved_on} "
        f"({approval.reference})"
        if approval is not None
        else "**not approved** (no `works_council_approval`): none is decided or sent"
    )
    return [
        *head,
        f"Deterrence notices are configured, over channel `{settings.channel}`, at most "
        f"{settings.max_per_day} a day; the works council's approval: {state}. A policy "
        "opts in with `notice:`. When a scheduled run raises a new alert of a person rule "
        "of such a policy (never a draft, a cluster or an audit), at most once per the "
        "policy's `every` days per person, the job decides the arm by a keyed hash of the "
        "pseudonym (the policy's `holdout` share gets none, so that the effect can be "
        "measured) and records the decision in `notices`. For a notice, it finds the "
        "person's address by recomputing the pseudonyms of the directory's people, as a "
        "reveal does, in memory, uses it for that one message and forgets it: the "
        "address is never stored, logged, shown or written in an error. The notice holds "
        "only the policy's title and description, the organisation's name and the help "
        "contacts, nothing of the alert; nobody reads it before it goes. The audit log "
        "records that notice N for alert A was sent, with the template's version and the "
        "message's hash, never the recipient.",
        "",
    ]


def inventory(config: Config) -> str:
    """The inventory as Markdown."""
    tables = schema()
    undocumented = sorted(set(tables) - set(TABLES))
    if undocumented:
        raise ComplianceError(f"the inventory does not describe: {', '.join(undocumented)}")
    r, rc, acc = config.retention, config.reports, config.accountability
    out = ["# Privacy inventory", ""]
    out += [
        "Purpose: find out whether corporate mail is used with categories of sites a "
        "policy names (for example escort advertising), without monitoring the content "
        "of anyone's mail.",
        "",
        "## What is collected",
        "",
    ]
    for source in config.sources:
        fields = _SOURCE_FIELDS.get(source.type, "as the connector documents")
        out.append(f"- source `{source.name}` ({source.type}): {fields}")
    if isinstance(config.directory, EntraDirectory):
        attrs = ", ".join(config.directory.org_unit)
        out.append(
            f"- directory: Entra ID users via `{config.directory.source}`: id, mail, "
            f"userPrincipalName, proxyAddresses, userType and {attrs}. Names are never "
            "requested. Held in memory for the run only."
        )
    elif config.directory:
        out.append(
            "- directory: a CSV; only mail, userPrincipalName, proxyAddresses, id and "
            "department are read. Held in memory for the run only."
        )
    out += [
        "- never: message bodies, subjects, attachments, IP addresses, names.",
        "",
        "## How people are pseudonymised",
        "",
        "Every internal person becomes `p-` + 20 hex digits of HMAC-SHA256 of their "
        "directory id (or address) under a secret key, as the first step that keeps "
        "anything. The external party keeps only its domain. Key rotation: "
        f"**{config.privacy.key_rotation}** (pseudonyms of different epochs cannot be "
        "linked without the key). The store keeps a fingerprint of each epoch's key, "
        "never the key; a run with another key is refused.",
        "",
        "## What is kept, and for how long",
        "",
        "| table | about people | holds | kept |",
        "|---|---|---|---|",
    ]
    kept = {
        "events": f"{r.events_days} days (a person's, until their open episode ends)",
        "daily_totals": f"{r.events_days} days",
        "seen_keys": f"{r.dedup_days} days",
        "alerts": f"{r.alerts_days} days after the episode ends (longer with a case)",
        "alert_updates": "with their alert",
        "triage": "with their alert",
        "cases": f"{r.cases_days} days after closing",
        "case_approvals": f"with their case ({r.cases_days} days after closing)",
        "audit_log": "permanently (append-only)",
        "outbox": f"{r.alerts_days} days after it was sent or dropped",
        "notices": f"with their alert ({r.alerts_days} days after the episode ends)",
        "retro_contacts": (
            f"{min(config.retro_hunt_days, r.events_days)} days, or until a feed lists the "
            "domain (then it becomes an event)"
            if config.retro_hunt_days
            else "nothing (retro_hunt_days is off)"
        ),
    }
    for table in sorted(tables):
        who, what = TABLES[table]
        mark = "pseudonymous" if who == "P" else "no"
        out.append(f"| `{table}` | {mark} | {what} | {kept.get(table, 'permanently')} |")
    out += ["", "Purges run with every run and are written to the audit log.", ""]
    out += retro_hunt_notice(config)
    out += deterrence_notices(config)
    out += [
        "## Who sees what",
        "",
        f"- Scheduled reports (`{rc.dir}`, audience **{rc.audience}**, every run, "
        f"{rc.period} days):"
        + (
            " pseudonymous alerts and an org-unit table; units under "
            f"{rc.min_group_size} people merge into their parent, and counts of fewer than "
            f"{rc.min_group_size} people are withheld with complementary cells."
            if rc.audience == "team"
            else f" differentially private counts per org unit (epsilon {rc.epsilon} per "
            f"report, budget {rc.dp_budget} per {rc.dp_budget_days} days), no alerts."
        ),
        "- Broad-audience reports (`compliance report --audience broad`): noisy counts "
        f"only (OpenDP, epsilon {rc.epsilon} each, at most {rc.dp_budget} within "
        f"{rc.dp_budget_days} days; the store refuses releases past it).",
        "- Operators of the store (the service account) can read pseudonymous rows, "
        "never identities.",
        "",
        "## Re-identification",
        "",
        "1. A member of the ethics team opens a case on one alert with a reason "
        "(`compliance case open`).",
        f"2. At least {acc.min_approvals} different approvers from the configured list "
        f"({', '.join(acc.approvers) or 'none listed: no reveal is possible'}) approve it "
        "(`compliance case approve`); the requester cannot approve.",
        "3. Only the requester can then reveal (`compliance case reveal`): the tool "
        "recomputes the pseudonyms of the directory's people with the key of the alert's "
        "epoch and prints the one that matches. The identity is printed once and never "
        "stored; only that one alert's subject can be revealed on that case.",
        "4. Every step, every refusal and every reveal is in the hash-chained audit log "
        "with the acting person "
        f"({'the operating-system user' if acc.identity == 'os' else 'from $' + acc.identity.env}) "
        "and the time; `compliance log verify` checks the chain.",
        "",
    ]
    return "\n".join(out)
