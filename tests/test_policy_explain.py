"""`compliance policy explain`: the policy in plain words, generated from the policy and the
configuration, checked against the loaded models (every number from them), in Markdown and
as a complete, escaped HTML document."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from click.testing import CliRunner

from compliance.cli import cli
from compliance.policy.loader import load_policy_file
from compliance.policy.rules.cluster import ClusterRule
from compliance.policy.rules.person import PersonRule
from tests.conftest import SHIPPED_POLICIES

SHIPPED = SHIPPED_POLICIES / "escort-ads.yaml"


def explain(*args: str) -> str:
    result = CliRunner().invoke(cli, ["policy", "explain", *args])
    assert result.exit_code == 0, result.output
    return result.output


def one_line(text: str) -> str:
    """The text with its line breaks and indentation as single spaces, and without the
    bold marks of labels (sentences are checked, not layout)."""
    return " ".join(text.split()).replace("**", "")


def test_the_shipped_policy_in_words_states_its_thresholds_windows_categories_and_exclusions() -> (
    None
):
    policy = load_policy_file(SHIPPED).policy
    text = one_line(explain(str(SHIPPED)))
    assert text.startswith(f"# {policy.title}")
    person = next(r for r in policy.rules if isinstance(r, PersonRule))
    cluster = next(r for r in policy.rules if isinstance(r, ClusterRule))
    assert (
        f"{person.min_messages} or more such messages on at least {person.min_days} different "
        f"days, at least {person.min_sent} of them sent by the person themselves (replies "
        f"alone never make one message repeated contact) within {person.window} days "
        f"(severity {person.severity})" in text
    )
    assert (
        f"at least {cluster.min_people} different people of the unit exchange such messages "
        f"with the same site within {cluster.window} days (severity {cluster.severity})" in text
    )
    assert f"under the category {policy.match.categories[0]}" in text
    assert f"reply to them within {policy.match.reply_window} days" in text
    assert f"org units {policy.scope.exclude_org_units[0]} (and the units below them)" in text
    assert f"quiet for {policy.suppress} days" in text
    assert f"At most {policy.max_alerts_per_day} new alerts a day" in text
    assert f"fewer than {policy.privacy.min_group_size} people are named as their parent" in text
    # what is never looked at, and who sees what
    assert "bodies, subjects and attachments are never read" in text
    assert "Received mail the gateway bounced, filtered as spam, quarantined or rejected" in text
    assert "at least 2 different approvers, never the person who asked, have approved it." in text
    assert "Each deployment sets these periods; by default: - 180 days" in text
    assert "draft" not in text.lower()


def test_a_changed_copy_changes_the_text(tmp_path: Path) -> None:
    text = SHIPPED.read_text()
    for old, new in (
        ("min_messages: 3", "min_messages: 5"),
        ("min_days: 2", "min_days: 4"),
        ("reply_window: 14d", "reply_window: 7d"),
        ("min_people: 3", "min_people: 6"),
        ("exclude_org_units: [Legal/Investigations]", "exclude_org_units: [HR/Cases, Audit]"),
        ("suppress: 30d", "suppress: 45d"),
        ("status: active", "status: draft"),
        ("evidence: conversation", "evidence: outbound"),
    ):
        assert old in text
        text = text.replace(old, new)
    copy = tmp_path / "changed.yaml"
    copy.write_text(text)
    out = one_line(explain(str(copy)))
    assert "5 or more such messages on at least 4 different days within 30 days" in out
    assert "at least 6 different people" in out
    assert "org units HR/Cases and Audit (and the units below them)" in out
    assert "Legal/Investigations" not in out
    assert "quiet for 45 days" in out
    assert "Only the messages you sent to a listed site count." in out
    assert "reply to them" not in out  # outbound: replies do not count
    assert "Mail you received, however much of it." in out
    assert "This policy is a draft" in out
    assert "it raises no alert and is not in force" in out
    assert "3 or more such messages" not in out


def test_the_html_is_a_complete_document_and_escapes_what_a_policy_says(tmp_path: Path) -> None:
    title = "<script>alert(1)</script> & <b>co</b>"
    text = SHIPPED.read_text().replace(
        "title: Corporate mail exchanged with escort-advertising sites", f"title: '{title}'"
    )
    text = text.replace("exclude_org_units: [Legal/Investigations]", "exclude_org_units: ['<i>x']")
    copy = tmp_path / "hostile.yaml"
    copy.write_text(text)
    html = explain(str(copy), "--format", "html")

    class Document(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.tags: list[str] = []
            self.doctype = ""
            self.title = ""
            self._in_title = False

        def handle_decl(self, decl: str) -> None:
            self.doctype = decl

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.tags.append(tag)
            self._in_title = tag == "title"

        def handle_endtag(self, tag: str) -> None:
            self._in_title = False

        def handle_data(self, data: str) -> None:
            if self._in_title:
                self.title += data

    document = Document()
    document.feed(html)
    document.close()
    assert document.doctype.lower() == "doctype html"
    for tag in ("html", "head", "title", "body", "main", "h1", "h2"):
        assert tag in document.tags
    assert "script" not in document.tags and "b" not in document.tags and "i" not in document.tags
    assert document.title == title  # shown as written, as text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;co&lt;/b&gt;" in html
    assert "&lt;i&gt;x" in html
    assert html.rstrip().endswith("</html>")
    # the Markdown notice too: a viewer passes raw HTML through, so none may be in it
    markdown = explain(str(copy))
    assert "<script>" not in markdown and "<i>" not in markdown
    assert "&lt;script&gt;" in markdown


def test_with_the_config_it_states_sources_fields_feeds_retention_reports_and_approvers(
    tmp_path: Path, directory_csv: Path, escort_feed: Path
) -> None:
    config = tmp_path / "compliance.yaml"
    config.write_text(
        "organisation: {domains: [corp.example]}\n"
        f"directory: {directory_csv}\n"
        "sources: [{name: gateway, type: exchange, path: inbox}]\n"
        "feeds:\n"
        f"  - {{path: {escort_feed}, category: escort-ads, name: escort-list, "
        "licence: CC-BY-SA-4.0, attribution: Example Lists Project, "
        "url: 'https://lists.example/escort.txt'}\n"
        f"  - {{path: {escort_feed}, category: gambling, name: other-list}}\n"
        f"  - {{path: {escort_feed}, kind: allow, name: big-webmail}}\n"
        f"policies: [{SHIPPED}]\n"
        "retention: {events_days: 45, alerts_days: 400, cases_days: 900, dedup_days: 60}\n"
        "privacy: {key_rotation: monthly}\n"
        "accountability: {approvers: [dpo, works-council-chair, lead], min_approvals: 3}\n"
        "reports:\n"
        "  min_group_size: 8\n"
        "  period: 7d\n"
        "  schedules: [{name: leadership, every: month, audience: broad}]\n"
    )
    text = one_line(explain(str(SHIPPED), "--config", str(config)))
    assert (
        "gateway: from the exchange mail logs, for each message only the time it was received, "
        "the sender's address, the recipient's address, its delivery status, its size and its "
        "technical message identifier." in text
    )
    assert (
        "escort-list: lists escort-ads; published by Example Lists Project; licence "
        "CC-BY-SA-4.0; fetched from https://lists.example/escort.txt." in text
    )
    assert "other-list" not in text  # a list of another category is not this policy's
    assert "big-webmail: an allow-list: its domains are never counted" in text
    assert "a secret key, that changes every month" in text
    assert (
        "each run's report: the ethics team, every 7 days: pseudonymous alerts; org units with "
        "fewer than 8 people" in text
    )
    assert "the leadership report: a broad audience, every 30 days: only noisy counts" in text
    assert (
        "at least 3 different approvers, never the person who asked, have approved it (the "
        "approvers: dpo, works-council-chair and lead)" in text
    )
    assert "- 45 days for the records of mail with listed sites" in text
    assert "- 400 days for alerts" in text
    assert "- 900 days for cases" in text
    assert "- 60 days for message fingerprints" in text
    assert "by default" not in text


def test_out_writes_the_notice_and_a_broken_policy_is_located(tmp_path: Path) -> None:
    out = tmp_path / "annex.html"
    result = CliRunner().invoke(
        cli, ["policy", "explain", str(SHIPPED), "--format", "html", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert f"written: {out}" in result.output
    assert out.read_text().startswith("<!DOCTYPE html>")
    broken = tmp_path / "broken.yaml"
    broken.write_text(SHIPPED.read_text().replace("min_days: 2", "min_days: two"))
    result = CliRunner().invoke(cli, ["policy", "explain", str(broken)])
    assert result.exit_code == 3
    assert f"{broken}:" in result.output and "rules[0].min_days" in result.output
