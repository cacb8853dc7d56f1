"""Sends the bytes of a file as one OTLP LogsService/Export request over gRPC, unchanged (with
a bearer token if a third argument gives one), and prints `OK <response hex>` or `ERR <status code> <details>`: for the tests of bodies that no SDK
would send (not protobuf, a record that does not decode)."""
import sys

import grpc

address, path = sys.argv[1], sys.argv[2]
metadata = [("authorization", "Bearer " + sys.argv[3])] if len(sys.argv) > 3 else None
with open(path, "rb") as f:
    body = f.read()
channel = grpc.insecure_channel(address)
export = channel.unary_unary(
    "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    request_serializer=lambda b: b,
    response_deserializer=lambda b: b,
)
try:
    print("OK", export(body, timeout=20, metadata=metadata).hex())
except grpc.RpcError as e:
    print("ERR", e.code().name, e.details())
