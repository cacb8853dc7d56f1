"""Sends the bytes of a file as one OTLP LogsService/Export request over gRPC, unchanged, and
prints `OK <response hex>` or `ERR <status code> <details>`: for the tests of bodies that no SDK
would send (not protobuf, a record that does not decode)."""
import sys

import grpc

address, path = sys.argv[1], sys.argv[2]
with open(path, "rb") as f:
    body = f.read()
channel = grpc.insecure_channel(address)
export = channel.unary_unary(
    "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    request_serializer=lambda b: b,
    response_deserializer=lambda b: b,
)
try:
    print("OK", export(body, timeout=20).hex())
except grpc.RpcError as e:
    print("ERR", e.code().name, e.details())
