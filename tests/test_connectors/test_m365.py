"""The Microsoft 365 connectors against a Graph-compatible HTTPS server on loopback.

msal and the connector talk real HTTPS (a throwaway CA) to a server that speaks the
OpenID discovery, token, message-trace and users protocols; nothing is mocked.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from compliance.errors import ConfigError, RetriableSourceError, SourceError
from compliance.events import RAW
from compliance.privacy import Pseudonymiser
from connectors.base import SourceState, create_source, parse_options
from connectors.entra import load_entra_directory
from connectors.graph import (
    MESSAGE_TRACE_PERMISSION,
    USERS_PERMISSION,
    GraphClient,
    RequestBudget,
    reset_shared_state,
)
from connectors.m365 import M365Options, M365Source
from tests.graph_server import (
    SECRET,
    TRACE_PATH,
    Fault,
    Running,
    start,
    trace_row,
)

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture
def graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    monkeypatch.setenv("M365_TEST_SECRET", SECRET)
    reset_shared_state()
    yield from start(tmp_path)
    reset_shared_state()


def settings(graph: Running, **extra: Any) -> dict[str, Any]:
    return graph.options(**extra)


def make_source(
    graph: Running,
    tmp_path: Path,
    *,
    sleeps: list[float] | None = None,
    budget: RequestBudget | None = None,
    **extra: Any,
) -> M365Source:
    options = parse_options(M365Options, "m365", settings(graph, **extra))
    budget = budget or RequestBudget(options.request_budget, 300)
    sleep = sleeps.append if sleeps is not None else (lambda _s: None)
    client = GraphClient("m365", options, tmp_path, MESSAGE_TRACE_PERMISSION, budget, sleep)
    return M365Source("m365", options, tmp_path, budget, client)


def read_all(source: M365Source, state: SourceState) -> pd.DataFrame:
    frames = [c.frame for u in source.units(state) for c in u.chunks()]
    return pd.concat(frames, ignore_index=True)


def rows_over(hours: int, count: int, external: str = "partner.example") -> list[dict[str, Any]]:
    """``count`` outbound rows spread over the last ``hours`` hours."""
    step = dt.timedelta(hours=hours) / count
    return [
        trace_row(
            NOW - dt.timedelta(hours=hours) + step * i + dt.timedelta(seconds=1),
            f"u{i % 7}@corp.example",
            f"contact{i}@{external}",
            subject=f"Secret subject {i}",
        )
        for i in range(count)
    ]


def test_secret_auth_and_paging_keep_only_the_needed_fields(graph: Running, tmp_path: Path) -> None:
    graph.state.traces = rows_over(20, 25)
    source = make_source(graph, tmp_path, start_days=1, page_size=10)
    frame = read_all(source, SourceState(None, NOW))
    assert len(frame) == 25
    assert list(frame.columns) == list(RAW)
    assert set(frame["message_id"]) == {r["id"] for r in graph.state.traces}
    text = frame.astype(str).to_csv()
    assert "Secret subject" not in text
    assert "192.0.2.44" not in text
    assert graph.state.trace_requests == 3  # 10 + 10 + 5 rows
    assert graph.state.token_requests == 1  # msal's cache served the later pages
    pages = [r for r in graph.state.requests if r.path == TRACE_PATH]
    assert "$skiptoken" not in pages[0].query
    assert pages[2].query["$skiptoken"] == ["20"]


def test_windows_never_exceed_ten_days_and_end_at_the_run_start(
    graph: Running, tmp_path: Path
) -> None:
    graph.state.traces = rows_over(24 * 25, 30)
    source = make_source(graph, tmp_path, start_days=25, window_hours=240)
    frame = read_all(source, SourceState(None, NOW))
    assert len(frame) == 30
    spans = []
    for request in graph.state.requests:
        if request.path == TRACE_PATH:
            words = request.query["$filter"][0].split()
            spans.append((pd.Timestamp(words[2]), pd.Timestamp(words[6])))
    assert len(spans) == 3
    assert all(end - begin <= pd.Timedelta(days=10) for begin, end in spans)
    assert spans[-1][1] == pd.Timestamp(NOW)
    assert spans[0][0] == pd.Timestamp(NOW - dt.timedelta(days=25))


def test_bookmark_overlap_and_reach(graph: Running, tmp_path: Path) -> None:
    source = make_source(graph, tmp_path, overlap_minutes=90)
    mark = NOW - dt.timedelta(hours=5)
    begin, end = source.plan(SourceState(mark.strftime("%Y-%m-%dT%H:%M:%SZ"), NOW))
    assert (begin, end) == (mark - dt.timedelta(minutes=90), NOW)
    with pytest.raises(SourceError, match="90 days"):
        source.windows(NOW - dt.timedelta(days=91), NOW, NOW)
    stale = (NOW - dt.timedelta(days=95)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with pytest.raises(SourceError, match="compliance sources reset m365"):
        source.units(SourceState(stale, NOW))
    with pytest.raises(ConfigError, match="start_days"):
        parse_options(M365Options, "m365", settings(graph, start_days=120))


def test_429_waits_for_retry_after_then_succeeds(graph: Running, tmp_path: Path) -> None:
    graph.state.traces = rows_over(10, 12)
    graph.state.faults = {2: Fault(429, {"Retry-After": "7"})}
    sleeps: list[float] = []
    source = make_source(graph, tmp_path, start_days=1, page_size=5, sleeps=sleeps)
    assert len(read_all(source, SourceState(None, NOW))) == 12
    assert sleeps == [7.0]
    assert graph.state.trace_requests == 4


def test_503_backs_off_exponentially_then_succeeds(graph: Running, tmp_path: Path) -> None:
    graph.state.traces = rows_over(10, 5)
    graph.state.faults = {1: Fault(503), 2: Fault(503)}
    sleeps: list[float] = []
    source = make_source(graph, tmp_path, start_days=1, sleeps=sleeps)
    assert len(read_all(source, SourceState(None, NOW))) == 5
    assert len(sleeps) == 2
    assert 1 <= sleeps[0] <= 2  # 1 s, plus up to 1 s of jitter
    assert 2 <= sleeps[1] <= 3


def test_5xx_that_persists_is_a_retriable_error(graph: Running, tmp_path: Path) -> None:
    graph.state.traces = rows_over(10, 5)
    graph.state.faults = {n: Fault(502) for n in range(1, 10)}
    source = make_source(graph, tmp_path, start_days=1, max_retries=2)
    with pytest.raises(RetriableSourceError, match="3 attempts"):
        read_all(source, SourceState(None, NOW))
    assert graph.state.trace_requests == 3


def test_401_names_the_service_principal_prerequisite(graph: Running, tmp_path: Path) -> None:
    graph.state.service_principal = False
    source = make_source(graph, tmp_path, start_days=1)
    with pytest.raises(SourceError) as info:
        read_all(source, SourceState(None, NOW))
    message = str(info.value)
    assert "401" in message
    assert "8bd644d1-64a1-4d4b-ae52-2e0cbf64e373" in message
    assert "tenant_id" in message
    assert graph.state.token_requests == 2  # one renewal was tried first


def test_403_names_the_permission_and_admin_consent(graph: Running, tmp_path: Path) -> None:
    graph.state.roles = []
    source = make_source(graph, tmp_path, start_days=1)
    with pytest.raises(SourceError, match=r"ExchangeMessageTrace\.Read\.All.*admin consent"):
        read_all(source, SourceState(None, NOW))


def test_wrong_secret_is_explained_without_the_secret(
    graph: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("M365_TEST_SECRET", "not-the-registered-secret")
    source = make_source(graph, tmp_path, start_days=1)
    with pytest.raises(SourceError) as info:
        read_all(source, SourceState(None, NOW))
    assert "AADSTS7000215" in str(info.value)
    assert "not-the-registered-secret" not in str(info.value)


def test_unknown_tenant_is_explained(graph: Running, tmp_path: Path) -> None:
    options = settings(graph, tenant_id="contoso.example")
    source = create_source("m365", "m365", options, tmp_path)
    with pytest.raises(SourceError, match="tenant_id"):
        source.units(SourceState(None, NOW))[0].chunks().__next__()


def test_secret_written_in_the_config_is_refused(graph: Running, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"client_secret.*\$env"):
        create_source("m365", "m365", settings(graph, client_secret=SECRET), tmp_path)


def test_token_expiring_mid_run_is_renewed(graph: Running, tmp_path: Path) -> None:
    graph.state.traces = rows_over(10, 30)
    source = make_source(graph, tmp_path, start_days=1, page_size=10)
    (window,) = source.units(SourceState(None, NOW))
    chunks = window.chunks()
    first = next(chunks)
    graph.state.revoke_tokens()
    rest = list(chunks)
    assert len(first.frame) + sum(len(c.frame) for c in rest) == 30
    assert graph.state.token_requests == 2


def _certificate(tmp_path: Path) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "compliance-monitor.test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _private(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    path.chmod(0o600)
    return str(path)


@pytest.mark.parametrize(
    "form", ["pem-with-certificate", "pem-with-thumbprint", "pem-in-environment", "pfx"]
)
def test_certificate_credentials(
    graph: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    key, cert = _certificate(tmp_path)
    graph.state.certificate = cert
    graph.state.traces = rows_over(10, 3)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    if form == "pem-with-certificate":
        credential: dict[str, Any] = {"pem": _private(tmp_path / "app.pem", key_pem + cert_pem)}
    elif form == "pem-in-environment":  # a container's secret as an environment variable
        monkeypatch.setenv("M365_CERT_PEM", (key_pem + cert_pem).decode())
        credential = {"pem": {"$env": "M365_CERT_PEM"}}
    elif form == "pem-with-thumbprint":
        credential = {
            "pem": _private(tmp_path / "app.key", key_pem),
            "thumbprint": cert.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303
        }
    else:
        monkeypatch.setenv("M365_PFX_PASSWORD", "pfx-pass")
        blob = pkcs12.serialize_key_and_certificates(
            b"app", key, cert, None, serialization.BestAvailableEncryption(b"pfx-pass")
        )
        credential = {
            "pfx": _private(tmp_path / "app.pfx", blob),
            "password": {"$env": "M365_PFX_PASSWORD"},
        }
    options = {**settings(graph, start_days=1), "certificate": credential}
    del options["client_secret"]
    source = create_source("m365", "m365", options, tmp_path)
    frame = pd.concat([c.frame for u in source.units(SourceState(None, NOW)) for c in u.chunks()])
    assert len(frame) == 3


def test_key_file_readable_by_others_is_refused(graph: Running, tmp_path: Path) -> None:
    key, cert = _certificate(tmp_path)
    pem = tmp_path / "open.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    pem.chmod(0o644)
    options = {**settings(graph, start_days=1), "certificate": {"pem": str(pem)}}
    del options["client_secret"]
    source = create_source("m365", "m365", options, tmp_path)
    with pytest.raises(ConfigError, match="chmod 600"):
        source.units(SourceState(None, NOW))[0].chunks().__next__()


class FakeClock:
    """Time that passes only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.slow
def test_budget_is_never_exceeded_over_a_long_backfill(tmp_path: Path) -> None:
    os.environ["M365_TEST_SECRET"] = SECRET
    clock = FakeClock()
    reset_shared_state()
    server = start(tmp_path, clock)
    graph = next(server)
    try:
        graph.state.traces = rows_over(24 * 3, 230)
        budget = RequestBudget(100, 300, clock, clock.sleep)
        source = make_source(graph, tmp_path, budget=budget, start_days=3, page_size=1)
        assert len(read_all(source, SourceState(None, NOW))) == 230
        times = graph.state.trace_requests_at()
        assert len(times) == 230
        busiest = max(sum(1 for t in times if s <= t < s + 300) for s in times)
        assert busiest == 100
        assert clock.now - 1000.0 >= 600  # two full windows had to be waited out
    finally:
        server.close()
        del os.environ["M365_TEST_SECRET"]


def test_entra_directory_maps_aliases_and_renames_to_one_pseudonym(
    graph: Running, tmp_path: Path
) -> None:
    guid = "5d1e1d9c-0000-4000-8000-000000000001"
    graph.state.users = [
        {
            "id": guid,
            "displayName": "Ada Example",
            "mail": "ada@corp.example",
            "userPrincipalName": "ada.x@corp.example",
            "proxyAddresses": ["SMTP:ada@corp.example", "smtp:a.example@corp.example", "X500:/o=x"],
            "department": "Sales",
            "companyName": "Corp EMEA",
            "userType": "Member",
        },
        *[
            {
                "id": f"5d1e1d9c-0000-4000-8000-{n:012d}",
                "mail": f"p{n}@corp.example",
                "userPrincipalName": f"p{n}@corp.example",
                "proxyAddresses": [],
                "department": "Sales",
                "companyName": "Corp EMEA",
                "userType": "Member",
            }
            for n in range(2, 1500)
        ],
        {"id": "guest", "mail": "visitor@partner.example", "userType": "Guest"},
    ]
    options = parse_options(M365Options, "m365", settings(graph))
    client = GraphClient("m365", options, tmp_path, USERS_PERMISSION)
    directory = load_entra_directory(client, ["companyName", "department"])
    assert directory.headcounts == {"Corp EMEA/Sales": 1499}
    people = {directory.lookup(a) for a in ("ada@corp.example", "a.example@corp.example")}
    assert people == {(f"id:{guid}", "Corp EMEA/Sales")}
    assert directory.lookup("ada.x@corp.example") == (f"id:{guid}", "Corp EMEA/Sales")
    # a renamed address keeps the pseudonym: it is derived from the id
    graph.state.users[0]["mail"] = "ada.renamed@corp.example"
    renamed = load_entra_directory(client, ["department"])
    pseudo = Pseudonymiser(b"k" * 32).pseudonym
    assert pseudo(renamed.lookup("ada.renamed@corp.example")[0]) == pseudo(f"id:{guid}")
    calls = [r for r in graph.state.requests if r.path == "/v1.0/users"]
    assert len(calls) == 4  # 999 + 502 users, twice
    assert "displayName" not in calls[0].query["$select"][0]
    assert "visitor@partner.example" not in directory.people


def test_malformed_rows_are_counted_and_boundary_rows_belong_to_the_later_window() -> None:
    from connectors.m365 import page_to_chunk

    begin, end = NOW - dt.timedelta(hours=2), NOW
    good = trace_row(NOW - dt.timedelta(hours=1), "u1@corp.example", "x@partner.example")
    good["receivedDateTime"] = good["receivedDateTime"].replace("Z", ".4575412Z")  # 100 ns
    on_end = trace_row(end, "u1@corp.example", "y@partner.example")
    no_time = {**good, "receivedDateTime": "not a time", "id": "other"}
    chunk = page_to_chunk([good, "garbage", on_end, no_time], begin, end)
    assert chunk.rejected == {"malformed_row": 1}
    assert list(chunk.frame["message_id"]) == [good["id"], "other"]
    assert chunk.frame["timestamp"].isna().tolist() == [False, True]  # rejected downstream
    assert chunk.frame["timestamp"].iloc[0].microsecond == 457541


def test_a_hung_request_times_out_and_is_retried(graph: Running, tmp_path: Path) -> None:
    graph.state.traces = rows_over(10, 5)
    graph.state.hang_on = 1
    sleeps: list[float] = []
    source = make_source(graph, tmp_path, start_days=1, timeout=1, sleeps=sleeps)
    assert len(read_all(source, SourceState(None, NOW))) == 5
    assert graph.state.hung.is_set()
    assert graph.state.trace_requests == 2
    assert len(sleeps) == 1


def test_retry_after_as_an_http_date_is_honoured(graph: Running, tmp_path: Path) -> None:
    from email.utils import format_datetime

    graph.state.traces = rows_over(10, 3)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=20)
    graph.state.faults = {1: Fault(429, {"Retry-After": format_datetime(later, usegmt=True)})}
    sleeps: list[float] = []
    source = make_source(graph, tmp_path, start_days=1, sleeps=sleeps)
    assert len(read_all(source, SourceState(None, NOW))) == 3
    assert len(sleeps) == 1
    assert 15 <= sleeps[0] <= 20


def test_a_next_link_to_another_host_is_refused(graph: Running, tmp_path: Path) -> None:
    link = "https://graph.attacker.example/v1.0/admin/exchange/tracing/messageTraces?$skiptoken=1"
    graph.state.faults = {1: Fault(200, body={"value": [], "@odata.nextLink": link})}
    source = make_source(graph, tmp_path, start_days=1)
    with pytest.raises(SourceError, match="refusing to send the token"):
        read_all(source, SourceState(None, NOW))
