"""Sends 100 log records to teelog ship with the OpenTelemetry Python SDK, as an application would.

usage: send_logs.py http|grpc HOST:PORT

Each record carries its index so that the Rust test can compare every field it stored.
"""

import sys

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry._logs import SeverityNumber
from opentelemetry.trace import SpanContext, TraceFlags, NonRecordingSpan, set_span_in_context

protocol, address = sys.argv[1], sys.argv[2]
if protocol == "http":
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    exporter = OTLPLogExporter(endpoint=f"http://{address}/v1/logs")
else:
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

    exporter = OTLPLogExporter(endpoint=f"http://{address}", insecure=True)

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
