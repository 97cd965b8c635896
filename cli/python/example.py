#!/usr/bin/python3
"""Uploads a document, waits until it is indexed, and asks a question about it, printing the
answer as it streams in.

    /usr/bin/python3 cli/python/example.py --server localhost:50051 --api-key KEY \
        book.txt --id book --question "Who is the narrator?"
"""

import argparse
import os
import sys

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sharedllm_client import Client  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("file", help="UTF-8 text file to upload")
    ap.add_argument("--id", required=True, help="document id ([A-Za-z0-9._-], 1-128 chars)")
    ap.add_argument("--question", required=True)
    ap.add_argument("--server", default=os.environ.get("SHAREDLLM_SERVER", "localhost:50051"))
    ap.add_argument("--api-key", default=os.environ.get("SHAREDLLM_API_KEY"))
    ap.add_argument("--tls-ca", help="PEM CA to verify the server with (enables TLS)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--reuse", action="store_true",
                    help="skip the upload when the document already exists")
    args = ap.parse_args()

    with Client(args.server, api_key=args.api_key, root_certificates=args.tls_ca) as client:
        try:
            exists = False
            if args.reuse:
                try:
                    exists = client.pb.documents_pb2.IndexJob.State.Name(
                        client.get(args.id).state) == "READY"
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.NOT_FOUND:
                        raise
            if not exists:
                def progress(job):
                    done = f" {job.chunks_done}/{job.chunks_total} chunks" if job.chunks_total else ""
                    print(f"[{client.state_name(job.state)}]{done}", file=sys.stderr)

                job = client.upload(args.file, document_id=args.id, wait=True, on_progress=progress)
                if client.state_name(job.state) != "READY":
                    print(f"indexing ended {client.state_name(job.state)}: "
                          f"{job.error_code} {job.error_message}", file=sys.stderr)
                    return 1

            print(f"Q: {args.question}\nA: ", end="", flush=True)
            for msg in client.ask(args.question, document_ids=[args.id], max_tokens=args.max_tokens):
                kind = msg.WhichOneof("event")
                if kind == "started":
                    print(f"({len(msg.started.nodes)} nodes selected over "
                          f"{msg.started.num_chunks} chunks)", file=sys.stderr)
                elif kind == "delta":
                    print(msg.delta.text, end="", flush=True)
                elif kind == "final":
                    f = msg.final
                    print()
                    print(f"[{f.usage.completion_tokens} tokens, ttft "
                          f"{f.timings.time_to_first_token_seconds:.3f}s, total "
                          f"{f.timings.total_seconds:.3f}s]", file=sys.stderr)
        except grpc.RpcError as e:
            print(f"\nerror: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
