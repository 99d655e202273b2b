"""What the layering tests allow beyond import-linter's contract (shared by the layering
and architecture-document tests)."""

from __future__ import annotations

#: Imports that may stay inside a function: optional or platform-only dependencies, and
#: heavy ones only some runs need (OpenDP for broad reports; msal and requests for an
#: Entra ID directory). Never to dodge a cycle.
LAZY = {
    ("compliance/executors.py", "distributed"),
    ("compliance/store/files.py", "resource"),
    ("compliance/reports/broad.py", "opendp.prelude"),
    ("compliance/job.py", "connectors.entra"),
    # the scheduled job (feed downloads, notices, deliveries): only an audit with a config
    ("compliance/audit.py", "compliance.job"),
    # the google extra's BigQuery client (grpc, protobuf: heavy, and optional)
    ("connectors/google.py", "google.cloud"),
}
