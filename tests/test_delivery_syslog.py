"""The syslog delivery (SIEM) against real collectors on loopback (tests/syslog_server.py).

A TLS collector (its certificate from a throwaway CA, trustme), a plain TCP one and a UDP
one receive the events; nothing is mocked. The tests check the RFC 5424 header, the
octet-counted framing, CEF escaping with hostile values, the JSON form, stable event ids,
the error mapping, and that no byte received carries a pseudonym or an address.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import trustme

from compliance import __version__
from compliance.deliveries.syslog import (
    CEF_SEVERITY,
    EVENT_FIELDS,
    SD_ID,
    Syslog,
    SyslogOptions,
    cef_header,
    cef_value,
)
from compliance.delivery import Message
from compliance.errors import ConfigError, DeliveryError, RetriableDeliveryError
from tests.syslog_server import (
    Collector,
    free_port,
    parse_5424,
    parse_cef,
    serve_stream,
    serve_udp,
)

KEY = "report=monthly|audience=team|period=2026-11-01..2026-11-30|channel=siem"
PSEUDONYM = "p-0123456789abcdef0123"
ADDRESS = "alice.martin@corp.example"
#: A pseudonym as the store writes them, and any address: neither may reach a collector.
PSEUDONYM_LIKE = re.compile(rb"p-[0-9a-f]{20}")


def event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "alert_id": 17,
        "policy": "gambling-sites",
        "rule": "person",
        "rule_id": "frequent-visits",
        "severity": "high",
        "change": "new",
        "org_unit": "Sales/EMEA",
        "messages": 12,
        "people": 1,
        "days": 4,
        "domains": ["bet.example", "casino.test"],
        "categories": ["gambling"],
        "first_day": "2026-11-02",
        "last_day": "2026-11-09",
        "trigger_day": "2026-11-09",
        "state": "open",
        "report_period": ["2026-11-01", "2026-11-30"],
    }
    base.update(overrides)
    return base


CLUSTER = event(
    alert_id=18,
    rule="cluster",
    rule_id="many-people",
    severity="medium",
    change="updated",
    org_unit="Engineering",
    messages=40,
    people=None,  # withheld
    days=9,
    domains=["casino.test"],
    state="acknowledged",
)


def message(*events: Mapping[str, Any], key: str = KEY) -> Message:
    return Message(key=key, subject="Compliance report", text="", events=tuple(events))


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_pem(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def tls(ca: trustme.CA) -> Iterator[Collector]:
    with serve_stream(cert=ca.issue_cert("localhost", "127.0.0.1")) as collector:
        yield collector


@pytest.fixture
def tcp() -> Iterator[Collector]:
    with serve_stream() as collector:
        yield collector


@pytest.fixture
def udp() -> Iterator[Collector]:
    with serve_udp() as collector:
        yield collector


def channel(collector: Collector | None, base_dir: Path = Path(), **options: Any) -> Syslog:
    """A channel to ``collector``, configured as a config file would."""
    given: dict[str, Any] = {"host": "127.0.0.1", "timeout": 5}
    if collector is not None:
        given["port"] = collector.port
    given.update(options)
    delivery = Syslog.create("siem", given, base_dir)
    assert isinstance(delivery, Syslog)
    return delivery


def tls_channel(collector: Collector | None, ca_pem: Path, **options: Any) -> Syslog:
    return channel(collector, ca_pem.parent, ca_bundle=ca_pem.name, **options)


# --- RFC 5424 over TLS, CEF ---------------------------------------------------------------
def test_each_event_is_one_rfc5424_message_over_tls(tls: Collector, ca_pem: Path) -> None:
    before = dt.datetime.now(dt.UTC)
    receipt = tls_channel(tls, ca_pem, hostname="monitor-01").deliver(message(event(), CLUSTER))
    assert receipt == f"2 events over tls to 127.0.0.1:{tls.port}"
    frames = tls.wait(2)
    assert len(frames) == 2, tls.errors
    assert tls.errors == [] and tls.connections == 1  # one connection, frames well counted

    first, second = (parse_5424(f) for f in frames)
    assert first["pri"] == str(16 * 8 + 3)  # local0, high → err
    assert second["pri"] == str(16 * 8 + 4)  # local0, medium → warning
    for fields in (first, second):
        assert fields["version"] == "1"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields["timestamp"])
        sent = dt.datetime.fromisoformat(fields["timestamp"].replace("Z", "+00:00"))
        assert before - dt.timedelta(seconds=1) <= sent <= dt.datetime.now(dt.UTC)
        assert fields["hostname"] == "monitor-01"
        assert fields["app_name"] == "compliance-monitor"
        assert fields["procid"] == str(os.getpid())
        assert fields["sd_id"] == SD_ID
        assert re.fullmatch(r"[0-9a-f]{32}", fields["sd.eventId"])
    assert first["msgid"] == "alert-new" and second["msgid"] == "alert-updated"
    assert (first["sd.alertId"], second["sd.alertId"]) == ("17", "18")

    header, ext = parse_cef(first["msg"])
    assert header == [
        "CEF:0",
        "compliance-monitor",
        "compliance-monitor",
        __version__,
        "gambling-sites/frequent-visits",
        "new person alert: gambling-sites frequent-visits",
        "8",
    ]
    day = 86_400_000
    nov2 = int(dt.datetime(2026, 11, 2, tzinfo=dt.UTC).timestamp() * 1000)
    assert ext == {
        "externalId": first["sd.eventId"],
        "rt": ext["rt"],
        "act": "new",
        "cat": "person",
        "start": str(nov2),
        "end": str(nov2 + 8 * day - 1),
        "cs1Label": "policy",
        "cs1": "gambling-sites",
        "cs2Label": "ruleId",
        "cs2": "frequent-visits",
        "cs3Label": "orgUnit",
        "cs3": "Sales/EMEA",
        "cs4Label": "domains",
        "cs4": "bet.example,casino.test",
        "cs5Label": "categories",
        "cs5": "gambling",
        "cs6Label": "alertId",
        "cs6": "17",
        "cn1Label": "messages",
        "cn1": "12",
        "cn2Label": "people",
        "cn2": "1",
        "cn3Label": "days",
        "cn3": "4",
        "flexString1Label": "state",
        "flexString1": "open",
        "flexString2Label": "reportPeriod",
        "flexString2": "2026-11-01/2026-11-30",
        "flexDate1Label": "triggerDay",
        "flexDate1": str(nov2 + 7 * day),
        "msg": "new high alert 17 (policy gambling-sites, rule frequent-visits): messages "
        "12, people 1, days 4, 2026-11-02 to 2026-11-09",
    }
    assert abs(int(ext["rt"]) - sent.timestamp() * 1000) < 1000

    header, ext = parse_cef(second["msg"])
    assert header[6] == "5"
    assert "cn2" not in ext and "cn2Label" not in ext  # withheld: absent, not zero
    assert ext["flexString1"] == "acknowledged" and ext["act"] == "updated"


def test_hostname_defaults_to_this_machine(tcp: Collector) -> None:
    channel(tcp, transport="tcp").deliver(message(event()))
    assert parse_5424(tcp.wait(1)[0])["hostname"] == socket.gethostname()


@pytest.mark.parametrize(
    ("facility", "severity", "pri", "cef"),
    [
        ("local0", "critical", 16 * 8 + 2, "10"),
        ("local7", "high", 23 * 8 + 3, "8"),
        ("auth", "medium", 4 * 8 + 4, "5"),
        ("user", "low", 1 * 8 + 5, "3"),
        ("local0", "unheard-of", 16 * 8 + 5, "5"),
    ],
)
def test_pri_from_facility_and_severity(
    tcp: Collector, facility: str, severity: str, pri: int, cef: str
) -> None:
    channel(tcp, transport="tcp", facility=facility).deliver(message(event(severity=severity)))
    fields = parse_5424(tcp.wait(1)[0])
    assert fields["pri"] == str(pri)
    assert parse_cef(fields["msg"])[0][6] == cef


def test_cef_severities_cover_the_policy_levels() -> None:
    from compliance.policy.model import SEVERITY_ORDER

    assert set(CEF_SEVERITY) == set(SEVERITY_ORDER)


# --- CEF escaping -------------------------------------------------------------------------
HOSTILE_POLICY = "pol|icy=x\\y\nnext"
HOSTILE_UNIT = "Sales|EMEA=1 \\2\r\nCEF:0|fake|header|1|x|y|10|cs1=evil"
HOSTILE_RULE = "rule\\|id"


def test_hostile_values_are_escaped_and_come_back_intact(tcp: Collector) -> None:
    hostile = event(
        policy=HOSTILE_POLICY,
        org_unit=HOSTILE_UNIT,
        rule_id=HOSTILE_RULE,
        domains=["a=b.example", "c\\d.test"],
        categories=["x|y", "line\nbreak"],
        change="ended",
    )
    channel(tcp, transport="tcp").deliver(message(hostile))
    frames = tcp.wait(1)
    assert len(frames) == 1 and tcp.errors == []
    raw = frames[0]
    assert b"\n" not in raw and b"\r" not in raw  # one line, whatever the values hold
    header, ext = parse_cef(parse_5424(raw)["msg"])
    assert len(header) == 7  # no forged header field
    assert header[4] == "pol|icy=x\\y next/rule\\|id"  # header: line breaks become spaces
    assert ext["cs1"] == HOSTILE_POLICY  # extension: every character comes back
    assert ext["cs2"] == HOSTILE_RULE
    assert ext["cs3"] == HOSTILE_UNIT
    assert ext["cs4"] == "a=b.example,c\\d.test"
    assert ext["cs5"] == "x|y,line\nbreak"
    assert "fake" not in header and list(ext).count("cs1") == 1


def test_escaping_rules() -> None:
    assert cef_header("a|b\\c=d\ne") == "a\\|b\\\\c=d e"
    assert cef_value("a|b\\c=d\ne\rf") == "a|b\\\\c\\=d\\ne\\rf"
    assert cef_value("nul\x00tab\tdel\x7f") == "nul tab del "  # other controls: spaces


# --- JSON ---------------------------------------------------------------------------------
def test_json_form(tls: Collector, ca_pem: Path) -> None:
    unicode_unit = event(org_unit="Ventes/Île-de-France", policy='a"b\nc')
    receipt = tls_channel(tls, ca_pem, format="json").deliver(message(unicode_unit, CLUSTER))
    assert receipt == f"2 events over tls to 127.0.0.1:{tls.port}"
    frames = tls.wait(2)
    assert all(f.isascii() and b"\n" not in f for f in frames)
    first, second = (parse_5424(f) for f in frames)
    body = json.loads(first["msg"])
    assert list(body) == ["event_id", "product", "version", *EVENT_FIELDS]
    assert body == {
        "event_id": first["sd.eventId"],
        "product": "compliance-monitor",
        "version": __version__,
        **unicode_unit,
    }
    other = json.loads(second["msg"])
    assert other["people"] is None and other["rule"] == "cluster"
    assert other["event_id"] == second["sd.eventId"] != body["event_id"]


# --- stable event ids ---------------------------------------------------------------------
def test_event_ids_are_stable_across_sends(tcp: Collector) -> None:
    delivery = channel(tcp, transport="tcp")
    batch = message(event(), CLUSTER, event(alert_id=19, change="ended"))
    delivery.deliver(batch)
    delivery.deliver(message(*batch.events))  # the same message, sent again
    delivery.deliver(message(*batch.events, key=KEY + "|next"))  # another report's
    frames = tcp.wait(9)
    assert len(frames) == 9
    ids = [parse_5424(f)["sd.eventId"] for f in frames]
    cef_ids = [parse_cef(parse_5424(f)["msg"])[1]["externalId"] for f in frames]
    assert cef_ids == ids
    # the collector may read the three connections in any order: count, do not line up
    seen = Counter(ids)
    assert sorted(seen.values()) == [1, 1, 1, 2, 2, 2]  # a re-sent batch has its ids again
    assert len(seen) == 6  # distinct within a batch, and another message has other ids


def test_the_same_alert_twice_gets_two_ids(tcp: Collector) -> None:
    channel(tcp, transport="tcp").deliver(message(event(), event(), event(alert_id=None)))
    ids = [parse_5424(f)["sd.eventId"] for f in tcp.wait(3)]
    assert len(set(ids)) == 3


# --- no events ----------------------------------------------------------------------------
def test_no_events_sends_nothing(tcp: Collector, udp: Collector) -> None:
    assert channel(tcp, transport="tcp").deliver(message()) == (
        f"0 events: nothing sent to 127.0.0.1:{tcp.port}"
    )
    assert "0 events" in channel(udp, transport="udp").deliver(message())
    tcp.settle()
    assert tcp.connections == 0 and udp.frames == []


# --- UDP ----------------------------------------------------------------------------------
def test_udp_one_datagram_per_event(udp: Collector) -> None:
    events = [event(alert_id=i) for i in range(1, 4)]
    receipt = channel(udp, transport="udp").deliver(message(*events))
    assert receipt == f"3 events over udp to 127.0.0.1:{udp.port}"
    frames = udp.wait(3)
    assert len(frames) == 3
    parsed = [parse_5424(f) for f in frames]  # a whole message each: no octet count
    assert [p["sd.alertId"] for p in parsed] == ["1", "2", "3"]
    assert all(p["msg"].startswith("CEF:0|") for p in parsed)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux reports ICMP refusals")
def test_udp_collector_down_may_be_noticed() -> None:
    """A datagram to a closed port of this machine draws an ICMP refusal, which fails the
    next one: a batch of several events to a collector that is down is retried. (Over a
    network nothing says so: UDP has no delivery guarantee.)"""
    delivery = channel(None, port=free_port(socket.SOCK_DGRAM), transport="udp")
    with pytest.raises(RetriableDeliveryError, match="connection refused"):
        delivery.deliver(message(event(), CLUSTER, event(alert_id=19)))


def test_udp_default_port_is_514() -> None:
    options = SyslogOptions(host="localhost", transport="udp")
    assert options.resolved_port == 514


# --- errors -------------------------------------------------------------------------------
def test_untrusted_certificate_is_not_retried(ca_pem: Path) -> None:
    stranger = trustme.CA()  # a certificate from a CA nobody configured
    with serve_stream(cert=stranger.issue_cert("localhost", "127.0.0.1")) as collector:
        with pytest.raises(DeliveryError, match="certificate not trusted") as caught:
            tls_channel(collector, ca_pem).deliver(message(event()))
        assert not isinstance(caught.value, RetriableDeliveryError)
        assert "ca_bundle" in str(caught.value)
        collector.settle()
        assert collector.frames == []


def test_certificate_for_another_host_is_not_retried(ca: trustme.CA, ca_pem: Path) -> None:
    with serve_stream(cert=ca.issue_cert("siem.other.example")) as collector:
        with pytest.raises(DeliveryError, match="certificate not trusted") as caught:
            tls_channel(collector, ca_pem).deliver(message(event()))
        assert not isinstance(caught.value, RetriableDeliveryError)
        assert collector.frames == []


def test_system_cas_do_not_trust_a_throwaway_ca(tls: Collector) -> None:
    with pytest.raises(DeliveryError, match="certificate not trusted"):
        channel(tls).deliver(message(event()))


def test_server_down_is_retried(ca_pem: Path) -> None:
    port = free_port()
    for delivery in (
        channel(None, ca_pem.parent, port=port, ca_bundle=ca_pem.name),
        channel(None, port=port, transport="tcp"),
    ):
        with pytest.raises(RetriableDeliveryError, match="connection refused"):
            delivery.deliver(message(event()))


def test_reset_during_tls_is_retried(ca_pem: Path) -> None:
    with serve_stream(behaviour="reset") as collector, pytest.raises(RetriableDeliveryError):
        tls_channel(collector, ca_pem).deliver(message(event()))


def test_silent_server_times_out_and_is_retried(ca_pem: Path) -> None:
    with (
        serve_stream(behaviour="silent") as collector,
        pytest.raises(RetriableDeliveryError, match=r"no answer within 0\.3 s"),
    ):
        tls_channel(collector, ca_pem, timeout=0.3).deliver(message(event()))


def test_unknown_host_is_not_retried() -> None:
    delivery = channel(None, host="no-such-host.invalid")
    with pytest.raises(DeliveryError, match="host name not found") as caught:
        delivery.deliver(message(event()))
    assert not isinstance(caught.value, RetriableDeliveryError)


def test_missing_ca_bundle(tmp_path: Path) -> None:
    delivery = channel(None, tmp_path, port=free_port(), ca_bundle="absent.pem")
    with pytest.raises(DeliveryError, match=r"ca_bundle .*absent\.pem") as caught:
        delivery.deliver(message(event()))
    assert not isinstance(caught.value, RetriableDeliveryError)


# --- check --------------------------------------------------------------------------------
def test_check_connects_and_sends_nothing(tls: Collector, ca_pem: Path) -> None:
    results = tls_channel(tls, ca_pem).check()
    assert all(ok for ok, _ in results), results
    assert "certificate verified" in results[-1][1]
    tls.settle()
    assert tls.connections == 1 and tls.frames == [] and tls.errors == []


def test_check_reports_a_collector_down() -> None:
    ok, text = channel(None, port=free_port(), transport="tcp").check()[-1]
    assert not ok and "connection refused" in text


# --- options ------------------------------------------------------------------------------
def test_defaults() -> None:
    options = SyslogOptions(host="siem.corp.example")
    assert (options.transport, options.resolved_port, options.format) == ("tls", 6514, "cef")
    assert (options.facility, options.app_name, options.hostname) == (
        "local0",
        "compliance-monitor",
        None,
    )
    assert SyslogOptions(host="127.0.0.1", transport="tcp").resolved_port == 514
    assert all(f.description for f in SyslogOptions.model_fields.values())


def test_misspelt_option_refused() -> None:
    with pytest.raises(ConfigError, match="delivery 'siem': transprot: unknown option"):
        Syslog.create("siem", {"host": "siem.corp.example", "transprot": "udp"}, Path())


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_clear_text_only_to_loopback(transport: str) -> None:
    with pytest.raises(ConfigError, match=f"transport: {transport} \\(no encryption\\)"):
        Syslog.create("siem", {"host": "siem.corp.example", "transport": transport}, Path())
    for host in ("localhost", "127.0.0.1", "::1"):
        Syslog.create("siem", {"host": host, "transport": transport}, Path())


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"host": "tls://siem.corp.example"}, "host: must be a host name"),
        ({"host": "siem.corp.example", "format": "leef"}, "format:"),
        ({"host": "siem.corp.example", "facility": "local8"}, "facility:"),
        ({"host": "siem.corp.example", "app_name": "compliance monitor"}, "app_name:"),
        ({"host": "siem.corp.example", "hostname": "a" * 256}, "hostname:"),
        ({"host": "localhost", "transport": "udp", "ca_bundle": "ca.pem"}, "ca_bundle:"),
        ({"host": "siem.corp.example", "port": 0}, "port:"),
        ({}, r"host: Field required \(the syslog server"),
    ],
)
def test_bad_options_refused(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        Syslog.create("siem", options, Path())


# --- privacy: the byte scan ---------------------------------------------------------------
def test_no_pseudonym_or_address_reaches_a_collector(
    tls: Collector, tcp: Collector, udp: Collector, ca_pem: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever an event wrongly carries besides its documented fields (a pseudonym, an
    address) stays here: only :data:`EVENT_FIELDS` are sent, in either format, over every
    transport."""
    leaky = event(subject=PSEUDONYM, person=PSEUDONYM, address=ADDRESS, name="Alice Martin")
    batch = message(leaky, CLUSTER)
    for fmt in ("cef", "json"):
        tls_channel(tls, ca_pem, format=fmt).deliver(batch)
        channel(tcp, transport="tcp", format=fmt).deliver(batch)
        channel(udp, transport="udp", format=fmt).deliver(batch)
    received = [*tls.wait(4), *tcp.wait(4), *udp.wait(4)]
    assert len(received) == 12
    for collector in (tls, tcp, udp):
        for data in collector.raw:
            assert not PSEUDONYM_LIKE.search(data)
            assert b"@" not in data.replace(SD_ID.encode(), b"")  # the SD-ID's own @ only
            assert b"Alice" not in data and b"alice" not in data
    assert "event fields not sent" in caplog.text
    assert "address, name, person, subject" in caplog.text
    assert PSEUDONYM not in caplog.text and ADDRESS not in caplog.text
