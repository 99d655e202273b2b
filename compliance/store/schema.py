"""The store's schema: named migrations, applied in order, each in its own transaction.

A migration is never edited once released: a change is a new migration at the end.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[tuple[str, str]] = [
    (
        "initial",
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            status TEXT NOT NULL,
            rows_read INTEGER NOT NULL DEFAULT 0,
            rows_rejected INTEGER NOT NULL DEFAULT 0,
            rows_duplicate INTEGER NOT NULL DEFAULT 0,
            rows_matched INTEGER NOT NULL DEFAULT 0,
            alerts_new INTEGER NOT NULL DEFAULT 0,
            policies TEXT NOT NULL DEFAULT '{}',
            feeds TEXT NOT NULL DEFAULT '{}',
            error TEXT
        );
        CREATE TABLE bookmarks (
            source TEXT PRIMARY KEY,
            watermark TEXT,
            updated_at TEXT NOT NULL,
            run_id INTEGER NOT NULL REFERENCES runs(id)
        );
        CREATE TABLE ingested_units (
            source TEXT NOT NULL,
            unit_key TEXT NOT NULL,
            format TEXT NOT NULL,
            rows INTEGER NOT NULL,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            PRIMARY KEY (source, unit_key)
        );
        CREATE TABLE seen_messages (event_key INTEGER PRIMARY KEY, day TEXT NOT NULL);
        CREATE TABLE events (
            event_key INTEGER PRIMARY KEY,
            ts TEXT NOT NULL,
            day TEXT NOT NULL,
            source TEXT NOT NULL,
            subject TEXT NOT NULL,
            org_unit TEXT NOT NULL,
            direction TEXT NOT NULL,
            domain TEXT NOT NULL,
            reg_domain TEXT NOT NULL,
            categories TEXT NOT NULL,
            feeds TEXT NOT NULL,
            status TEXT,
            size INTEGER,
            run_id INTEGER NOT NULL REFERENCES runs(id)
        );
        CREATE INDEX events_day ON events(day);
        CREATE TABLE daily_totals (
            day TEXT NOT NULL,
            org_unit TEXT NOT NULL,
            direction TEXT NOT NULL,
            messages INTEGER NOT NULL,
            PRIMARY KEY (day, org_unit, direction)
        ) WITHOUT ROWID;
        CREATE TABLE alerts (
            id INTEGER PRIMARY KEY,
            policy TEXT NOT NULL,
            policy_version INTEGER NOT NULL,
            rule TEXT NOT NULL,
            rule_id TEXT NOT NULL,
            severity TEXT NOT NULL,
            subject TEXT,
            subject_key TEXT NOT NULL,
            org_unit TEXT NOT NULL,
            messages INTEGER NOT NULL,
            people INTEGER NOT NULL,
            domains TEXT NOT NULL,
            categories TEXT NOT NULL,
            first_day TEXT NOT NULL,
            last_day TEXT NOT NULL,
            trigger_day TEXT NOT NULL,
            window_days INTEGER NOT NULL,
            draft INTEGER NOT NULL,
            state TEXT NOT NULL DEFAULT 'new',
            created_at TEXT NOT NULL,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            UNIQUE (policy, rule_id, subject_key, trigger_day)
        );
        CREATE INDEX alerts_trigger ON alerts(trigger_day);
        CREATE TABLE rejected_rows (
            run_id INTEGER NOT NULL REFERENCES runs(id),
            source TEXT NOT NULL,
            reason TEXT NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (run_id, source, reason)
        );
        """,
    ),
    (
        "accountability",
        """
        CREATE TABLE audit_log (
            seq INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            details TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
        CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
        CREATE TABLE cases (
            id INTEGER PRIMARY KEY,
            alert_id INTEGER NOT NULL REFERENCES alerts(id),
            opened_by TEXT NOT NULL,
            opened_at TEXT NOT NULL,
            reason TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'open',
            closed_by TEXT,
            closed_at TEXT,
            outcome TEXT
        );
        CREATE TABLE case_approvals (
            case_id INTEGER NOT NULL REFERENCES cases(id),
            approver TEXT NOT NULL,
            at TEXT NOT NULL,
            PRIMARY KEY (case_id, approver)
        );
        CREATE TABLE key_epochs (
            epoch TEXT PRIMARY KEY,
            key_id TEXT NOT NULL,
            first_used TEXT NOT NULL
        );
        CREATE TABLE dp_releases (
            id INTEGER PRIMARY KEY,
            report TEXT NOT NULL,
            period TEXT NOT NULL,
            epsilon REAL NOT NULL,
            released TEXT NOT NULL,
            at TEXT NOT NULL,
            UNIQUE (report, period)
        );
        ALTER TABLE events ADD COLUMN epoch TEXT NOT NULL DEFAULT '-';
        ALTER TABLE alerts ADD COLUMN epoch TEXT NOT NULL DEFAULT '-';
        INSERT INTO key_epochs SELECT '-', value, datetime('now') FROM meta WHERE key = 'key_id'
        """,
    ),
    (
        "episodes_and_triage",
        """
        ALTER TABLE alerts ADD COLUMN days INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE alerts ADD COLUMN ended INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE alerts ADD COLUMN raised_day TEXT NOT NULL DEFAULT '';
        ALTER TABLE alerts ADD COLUMN updated_at TEXT;
        ALTER TABLE alerts ADD COLUMN assignee TEXT;
        ALTER TABLE alerts ADD COLUMN dismiss_reason TEXT;
        ALTER TABLE alerts ADD COLUMN decided_at TEXT;
        ALTER TABLE alerts ADD COLUMN merged_into INTEGER REFERENCES alerts(id);
        UPDATE alerts SET raised_day = trigger_day, ended = 1,
            state = CASE WHEN state = 'closed' THEN 'resolved' ELSE state END;
        CREATE INDEX alerts_subject ON alerts(policy, rule_id, subject_key);
        CREATE TABLE alert_updates (
            id INTEGER PRIMARY KEY,
            alert_id INTEGER NOT NULL REFERENCES alerts(id),
            run_id INTEGER REFERENCES runs(id),
            at TEXT NOT NULL,
            messages INTEGER NOT NULL,
            people INTEGER NOT NULL,
            days INTEGER NOT NULL,
            domains TEXT NOT NULL,
            categories TEXT NOT NULL,
            first_day TEXT NOT NULL,
            last_day TEXT NOT NULL,
            ended INTEGER NOT NULL
        );
        CREATE INDEX alert_updates_alert ON alert_updates(alert_id, id);
        INSERT INTO alert_updates (alert_id, run_id, at, messages, people, days, domains,
            categories, first_day, last_day, ended)
            SELECT id, run_id, created_at, messages, people, days, domains, categories,
            first_day, last_day, ended FROM alerts;
        CREATE TABLE triage (
            id INTEGER PRIMARY KEY,
            alert_id INTEGER NOT NULL REFERENCES alerts(id),
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            from_state TEXT NOT NULL,
            to_state TEXT NOT NULL,
            reason TEXT,
            note TEXT,
            assignee TEXT
        );
        CREATE INDEX triage_alert ON triage(alert_id);
        CREATE TABLE reports (
            id INTEGER PRIMARY KEY,
            audience TEXT NOT NULL,
            first_day TEXT NOT NULL,
            last_day TEXT NOT NULL,
            at TEXT NOT NULL,
            run_id INTEGER REFERENCES runs(id),
            update_seq INTEGER NOT NULL
        );
        ALTER TABLE ingested_units ADD COLUMN duplicates INTEGER NOT NULL DEFAULT 0;
        """,
    ),
    (
        # `subject` held a pseudonym, and read like a mail subject
        "person_columns",
        """
        ALTER TABLE events RENAME COLUMN subject TO person;
        ALTER TABLE alerts RENAME COLUMN subject TO person;
        ALTER TABLE alerts RENAME COLUMN subject_key TO episode_key;
        DROP INDEX alerts_subject;
        CREATE INDEX alerts_episode ON alerts(policy, rule_id, episode_key);
        """,
    ),
    (
        # each delivery of a report, recorded before and after it is sent: exactly once
        "outbox",
        """
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,
            report TEXT NOT NULL,
            audience TEXT NOT NULL,
            first_day TEXT NOT NULL,
            last_day TEXT NOT NULL,
            channel TEXT NOT NULL,
            files TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt TEXT NOT NULL,
            last_error TEXT,
            receipt TEXT,
            sha256 TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            run_id INTEGER REFERENCES runs(id)
        );
        CREATE INDEX outbox_due ON outbox(state, next_attempt);
        """,
    ),
    (
        # several named reports, each compared with its own previous one
        "report_schedules",
        """
        ALTER TABLE reports ADD COLUMN schedule TEXT NOT NULL DEFAULT 'report';
        """,
    ),
    (
        # one delivery status for every source (compliance.events.STATUSES); the spellings
        # as they were when this migration was written (later ones are mapped at ingest)
        "normalised_status",
        """
        UPDATE events SET status = CASE
            WHEN replace(replace(replace(lower(status), ' ', ''), '_', ''), '-', '') IN (
                'accept', 'accepted', 'continue', 'deliver', 'delivered',
                'delivery', 'expand', 'expanded', 'ok', 'relay', 'relayed',
                'resolve', 'resolved', 'send', 'sent', 'submitted', 'success',
                'successful', 'transferred'
            ) THEN 'delivered'
            WHEN replace(replace(replace(lower(status), ' ', ''), '_', ''), '-', '') IN (
                'defer', 'deferral', 'deferred', 'delay', 'delayed', 'pending',
                'queued', 'retry', 'softbounce', 'tempfail', 'temporaryfailure'
            ) THEN 'deferred'
            WHEN replace(replace(replace(lower(status), ' ', ''), '_', ''), '-', '') IN (
                'bounce', 'bounced', 'dsn', 'expired', 'fail', 'failed',
                'failure', 'hardbounce', 'ndr', 'permanentfailure', 'permfail',
                'undeliverable'
            ) THEN 'bounced'
            WHEN replace(replace(replace(lower(status), ' ', ''), '_', ''), '-', '') IN (
                'block', 'blocked', 'denied', 'deny', 'refused', 'reject',
                'rejected'
            ) THEN 'rejected'
            WHEN replace(replace(replace(lower(status), ' ', ''), '_', ''), '-', '') IN (
                'held', 'hold', 'quarantine', 'quarantined',
                'quarantinedmessage'
            ) THEN 'quarantined'
            WHEN replace(replace(replace(lower(status), ' ', ''), '_', ''), '-', '') IN (
                'bulk', 'discard', 'discarded', 'drop', 'dropped', 'filtered',
                'filteredasmalware', 'filteredasphish', 'filteredasspam',
                'junk', 'junked', 'malware', 'phish', 'phishing', 'spam',
                'virus'
            ) THEN 'filtered_as_spam'
            ELSE 'unknown' END;
        """,
    ),
    (
        # opt-in (retro_hunt_days): one row per external message not matched when read, so
        # that a domain a feed lists later is found in it; with the event key its event
        # would have (events' key: a message is never counted twice); the domain only as a
        # keyed digest. Rows are appended in reading order (a random key would make every
        # insert a random write); only rows whose status may still change are indexed by
        # event key, and hunts (rare) scan
        "retro_hunt",
        """
        CREATE TABLE retro_contacts (
            id INTEGER PRIMARY KEY,
            event_key INTEGER NOT NULL,
            hour TEXT NOT NULL,
            day TEXT NOT NULL,
            source TEXT NOT NULL,
            person TEXT NOT NULL,
            org_unit TEXT NOT NULL,
            direction TEXT NOT NULL,
            status TEXT NOT NULL,
            epoch TEXT NOT NULL,
            domain_digest INTEGER NOT NULL
        );
        CREATE INDEX retro_contacts_day ON retro_contacts (day);
        CREATE INDEX retro_contacts_pending ON retro_contacts (event_key)
            WHERE status IN ('deferred', 'unknown');
        """,
    ),
    (
        # `compliance feeds update`: every version of a feed installed (public data: where
        # it came from, when, its digests and counts per category), and every attempt
        # (installed, not modified, refused or failed, and why); never a log's content
        "feed_versions",
        """
        CREATE TABLE feed_versions (
            id INTEGER PRIMARY KEY,
            feed TEXT NOT NULL,
            kind TEXT NOT NULL,
            url TEXT,
            fetched_at TEXT NOT NULL,
            size INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            content_sha256 TEXT NOT NULL,
            entries INTEGER NOT NULL,
            categories TEXT NOT NULL,
            etag TEXT,
            last_modified TEXT,
            licence TEXT,
            attribution TEXT,
            verified TEXT
        );
        CREATE INDEX feed_versions_feed ON feed_versions (feed, id);
        CREATE INDEX feed_versions_content ON feed_versions (content_sha256);
        CREATE TABLE feed_updates (
            id INTEGER PRIMARY KEY,
            feed TEXT NOT NULL,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            url TEXT,
            outcome TEXT NOT NULL,
            reason TEXT,
            version_id INTEGER REFERENCES feed_versions (id)
        );
        CREATE INDEX feed_updates_feed ON feed_updates (feed, id);
        """,
    ),
    (
        # issue 16: the verification pattern's mark and a ring alert's figures (JSON,
        # pseudonymous: size, units, domains, counts of roles)
        "alert_marks",
        """
        ALTER TABLE alerts ADD COLUMN exchange_confirmed INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE alerts ADD COLUMN ring TEXT;
        """,
    ),
    (
        # ring rules: internal mail from people with evidence to colleagues, only as keyed
        # pair digests with counts per day, kept for the rings' windows
        "internal_edges",
        """
        CREATE TABLE internal_edges (
            day TEXT NOT NULL,
            pair_digest INTEGER NOT NULL,
            messages INTEGER NOT NULL,
            PRIMARY KEY (day, pair_digest)
        ) WITHOUT ROWID;
        """,
    ),
    (
        # deterrence notices: one row per notice decided (sent, or held back for the
        # holdout), exactly once; never the recipient's address. alert_id is no foreign
        # key: retention removes a notice with its alert (an alert outlives its notice)
        "notices",
        """
        CREATE TABLE notices (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,
            policy TEXT NOT NULL,
            alert_id INTEGER NOT NULL,
            person TEXT NOT NULL,
            epoch TEXT NOT NULL,
            day TEXT NOT NULL,
            arm TEXT NOT NULL,
            template TEXT NOT NULL,
            template_sha256 TEXT NOT NULL,
            channel TEXT,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt TEXT NOT NULL,
            sent_day TEXT,
            message_sha256 TEXT,
            receipt TEXT,
            last_error TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            run_id INTEGER REFERENCES runs(id)
        );
        CREATE INDEX notices_person ON notices (person, day);
        CREATE INDEX notices_state ON notices (state, next_attempt);
        """,
    ),
    (
        # a case on a ring alert is about one of its people (their pseudonym); null for a
        # case on a person alert, whose alert names its person
        "case_person",
        """
        ALTER TABLE cases ADD COLUMN person TEXT;
        """,
    ),
    (
        # issue 17: the keys of counted messages as sorted int64 packed per day
        # (compliance/store/seen.py says why), instead of one B-tree row per message.
        # SQLite 3.40 has no unhex(): a day's keys move over as the hex TEXT of their
        # big-endian bytes, one row per day and top four bits of the key (so that no
        # value nears SQLite's limit), and become a BLOB when keys are next added to it
        "seen_keys",
        """
        CREATE TABLE seen_keys (
            id INTEGER PRIMARY KEY,
            day TEXT NOT NULL,
            keys BLOB NOT NULL
        );
        CREATE INDEX seen_keys_day ON seen_keys (day);
        INSERT INTO seen_keys (day, keys)
            SELECT day, group_concat(printf('%016X', event_key), '')
            FROM (SELECT day, event_key FROM seen_messages ORDER BY day, event_key)
            GROUP BY day, event_key >> 60;
        DROP TABLE seen_messages;
        """,
    ),
    (
        # rows a scheduled run read and set aside without rejecting them (outside the
        # period, system mailboxes' and system-made mail, repeated transport events), by
        # reason, as rejected_rows counts the rejected ones: the data-quality section
        # shows both
        "skipped_rows",
        """
        CREATE TABLE skipped_rows (
            run_id INTEGER NOT NULL REFERENCES runs(id),
            source TEXT NOT NULL,
            reason TEXT NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (run_id, source, reason)
        );
        """,
    ),
    (
        # a notice keeps its channel's status code only (compliance.notices.unlinkable):
        # a queue id or message id in the receipt is found again, beside the recipient's
        # address, in the mail server's logs, and would name the person behind an alert
        "notice_receipts",
        """
        UPDATE notices SET receipt = CASE
            WHEN receipt GLOB 'HTTP [1-5][0-9][0-9]*' THEN substr(receipt, 1, 8)
            WHEN receipt GLOB '[1-5][0-9][0-9]*' THEN substr(receipt, 1, 3)
            ELSE 'accepted'
        END
        WHERE receipt IS NOT NULL;
        """,
    ),
]


def schema_statements(script: str) -> list[str]:
    """A script's statements (a trigger's body keeps its inner semicolons)."""
    out, buffer = [], ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \n;"):
                out.append(buffer)
            buffer = ""
    if buffer.strip(" \n;"):
        out.append(buffer)
    return out


def describe() -> dict[str, list[str]]:
    """Every table of the current schema with its columns (for the privacy inventory)."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE TABLE schema_migrations (version, name, applied_at)")
        for _name, script in MIGRATIONS:
            for statement in schema_statements(script):
                conn.execute(statement)
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: [c[1] for c in conn.execute(f"PRAGMA table_info({t})")] for t in tables}
    finally:
        conn.close()
