"""Sends 100 log records to teelog ship with the OpenTelemetry Python SDK, as an application would.

usage: send_logs.py http|grpc HOST:PORT [CA_PEM [CLIENT_CERT_PEM CLIENT_KEY_PEM]]

With CA_PEM the exporter speaks TLS and trusts that CA, with the client files it presents a
certificate too (mTLS). Each record carries its index so that the Rust test can compare every field
it stored. Exits non-zero if any export failed. SEND_LOGS_TIMEOUT (seconds, default 5) bounds
each export with its retries: short where failure is expected.
"""

import os
import sys

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry._logs import SeverityNumber
from opentelemetry.trace import SpanContext, TraceFlags, NonRecordingSpan, set_span_in_context

from opentelemetry.sdk._logs.export import LogRecordExportResult

protocol, address = sys.argv[1], sys.argv[2]
ca, client_cert, client_key = (sys.argv[3:] + [None] * 3)[:3]
scheme = "https" if ca else "http"
timeout = float(os.environ.get("SEND_LOGS_TIMEOUT", "5"))
if protocol == "http":
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    exporter = OTLPLogExporter(
        endpoint=f"{scheme}://{address}/v1/logs",
        certificate_file=ca,
        client_certificate_file=client_cert,
        client_key_file=client_key,
        timeout=timeout,
    )
else:
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

    def read(path):
        return open(path, "rb").read() if path else None

    credentials = grpc.ssl_channel_credentials(read(ca), read(client_key), read(client_cert)) if ca else None
    exporter = OTLPLogExporter(
        endpoint=f"{scheme}://{address}", insecure=not ca, credentials=credentials, timeout=timeout
    )

# The processor drops an export's result: keep it, so that a refused connection fails the script.
failed = []
export = exporter.export


def checked_export(batch):
    result = export(batch)
    if result != LogRecordExportResult.SUCCESS:
        failed.append(result)
    return result


exporter.export = checked_export

provider = LoggerProvider(resource=Resource.create({"service.name": "core-banking"}))
processor = BatchLogRecordProcessor(exporter, max_export_batch_size=32)
provider.add_log_record_processor(processor)
logger = provider.get_logger("teelog.test")

BASE_NS = 1_796_119_200 * 10**9  # 2026-12-01T10:00:00Z
for i in range(100):
    span = SpanContext(trace_id=0xABC0 + i, span_id=0xDE0 + i, is_remote=False, trace_flags=TraceFlags(1))
    logger.emit(
        timestamp=BASE_NS + (i % 60) * 10**9,
        context=set_span_in_context(NonRecordingSpan(span)),
        severity_text="WARN",
        severity_number=SeverityNumber.WARN,
        body=f"transfer {i} booked",
        attributes={"protocol": protocol, "i": i, "amount": 100.25, "tags": ["audit", "eu"]},
    )

if not provider.force_flush(timeout_millis=30_000):
    sys.exit("the SDK could not flush its logs")
provider.shutdown()
if failed:
    sys.exit(f"{len(failed)} export(s) failed")
