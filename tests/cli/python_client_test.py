#!/usr/bin/python3
"""cli/python/sharedllm_client.py against an in-process fake of the services (grpcio):
stub generation, chunked upload with SHA-256, watching, streamed answers, paging, API keys.
Exits 77 (skipped) when python3-grpcio or python3-grpc-tools is missing."""

import hashlib
import os
import sys
import tempfile
import threading
import unittest
from concurrent import futures

try:
    import grpc
    import grpc_tools  # noqa: F401
except ImportError as e:
    print(f"SKIP: {e} (apt-get install -y python3-grpcio python3-grpc-tools)")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "cli", "python"))
os.environ.setdefault("SHAREDLLM_STUB_CACHE", tempfile.mkdtemp(prefix="sharedllm_stubs_"))
import sharedllm_client  # noqa: E402

S = sharedllm_client.load_stubs()
D, Q = S.documents_pb2, S.query_pb2
KEY = "py-test-key-0123456789"


def check_key(context):
    md = dict(context.invocation_metadata())
    if md.get("authorization") != f"Bearer {KEY}":
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad key")


class FakeDocuments(S.documents_pb2_grpc.DocumentServiceServicer):
    def __init__(self):
        self.header, self.content, self.chunks = None, b"", []

    def UploadDocument(self, request_iterator, context):
        check_key(context)
        first = next(request_iterator)
        self.header, self.content, self.chunks = first.header, b"", []
        for r in request_iterator:
            self.chunks.append(len(r.chunk))
            self.content += r.chunk
        if hashlib.sha256(self.content).hexdigest() != self.header.sha256:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "sha256 mismatch")
        return D.IndexJob(document_id=self.header.document_id, state=D.IndexJob.QUEUED)

    def WatchIndexStatus(self, request, context):
        check_key(context)
        yield D.IndexJob(document_id=request.document_id, state=D.IndexJob.COMPRESSING,
                         chunks_done=1, chunks_total=2)
        yield D.IndexJob(document_id=request.document_id, state=D.IndexJob.READY,
                         chunks_done=2, chunks_total=2)

    def GetIndexStatus(self, request, context):
        check_key(context)
        if request.document_id == "missing":
            context.abort(grpc.StatusCode.NOT_FOUND, "no such document")
        return D.IndexJob(document_id=request.document_id, state=D.IndexJob.READY)

    def ListDocuments(self, request, context):
        check_key(context)
        if not request.page_token:
            return D.ListDocumentsResponse(documents=[D.Document(document_id="a")],
                                           next_page_token="2")
        return D.ListDocumentsResponse(documents=[D.Document(document_id="b")])

    def DeleteDocument(self, request, context):
        check_key(context)
        self.deleted = request.document_id
        return D.DeleteDocumentResponse()


class FakeQuery(S.query_pb2_grpc.QueryServiceServicer):
    def __init__(self):
        self.cancelled = threading.Event()
        self.last = None

    def Ask(self, request, context):
        check_key(context)
        self.last = request
        context.add_callback(self.cancelled.set)
        yield Q.AskResponse(started=Q.Started(
            nodes=[Q.SelectedNode(document_id="doc", chunk=0, level=1)], num_chunks=1))
        n = 2 if request.options.max_tokens == 0 else request.options.max_tokens
        for i in range(n):
            yield Q.AskResponse(delta=Q.TokenDelta(text=f" t{i}"))
        yield Q.AskResponse(final=Q.Final(finish_reason=Q.Final.LENGTH,
                                          usage=Q.Usage(completion_tokens=n)))

    def Retrieve(self, request, context):
        check_key(context)
        return Q.RetrieveResponse(nodes=[Q.SelectedNode(document_id="doc")], num_chunks=1)


class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        cls.docs, cls.query = FakeDocuments(), FakeQuery()
        S.documents_pb2_grpc.add_DocumentServiceServicer_to_server(cls.docs, cls.server)
        S.query_pb2_grpc.add_QueryServiceServicer_to_server(cls.query, cls.server)
        port = cls.server.add_insecure_port("127.0.0.1:0")
        cls.server.start()
        cls.target = f"127.0.0.1:{port}"
        cls.client = sharedllm_client.Client(cls.target, api_key=KEY, timeout=20)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.server.stop(None)

    def test_upload_file_in_chunks_and_wait(self):
        data = os.urandom((5 << 19) + 7)
        with tempfile.NamedTemporaryFile(suffix=".txt") as f:
            f.write(data)
            f.flush()
            seen = []
            job = self.client.upload(f.name, "doc-1", "c", wait=True, on_progress=seen.append)
        self.assertEqual(self.client.state_name(job.state), "READY")
        self.assertEqual([self.client.state_name(j.state) for j in seen],
                         ["QUEUED", "COMPRESSING", "READY"])
        self.assertEqual(self.docs.content, data)
        self.assertEqual(self.docs.chunks, [1 << 20, 1 << 20, (1 << 19) + 7])
        self.assertEqual(self.docs.header.document_id, "doc-1")
        self.assertEqual(self.docs.header.collection_id, "c")
        self.assertEqual(self.docs.header.name, os.path.basename(f.name))

    def test_upload_bytes(self):
        job = self.client.upload(b"hello", "doc-2", name="greeting")
        self.assertEqual(self.client.state_name(job.state), "QUEUED")
        self.assertEqual(self.docs.content, b"hello")
        self.assertEqual(self.docs.header.name, "greeting")

    def test_ask_streams(self):
        kinds = [m.WhichOneof("event") for m in self.client.ask("Q?", ["doc"], max_tokens=3)]
        self.assertEqual(kinds, ["started", "delta", "delta", "delta", "final"])
        self.assertEqual(self.query.last.options.max_tokens, 3)
        ans = self.client.answer("Q?", collection_id="c")
        self.assertEqual(ans.text, " t0 t1")
        self.assertEqual(ans.final.usage.completion_tokens, 2)
        self.assertEqual(len(ans.started.nodes), 1)
        with self.assertRaises(ValueError):
            self.client.ask("Q?")
        with self.assertRaises(ValueError):
            self.client.ask("Q?", ["a"], "c")

    def test_closing_an_ask_early_cancels_it(self):
        self.query.cancelled.clear()
        stream = self.client.ask("Q?", ["doc"], max_tokens=1000)
        next(stream)
        stream.close()
        self.assertTrue(self.query.cancelled.wait(10))

    def test_other_calls(self):
        self.assertEqual([d.document_id for d in self.client.list()], ["a", "b"])
        self.assertEqual(self.client.status("x").document_id, "x")
        self.client.delete("gone")
        self.assertEqual(self.docs.deleted, "gone")
        self.assertEqual(self.client.retrieve("Q?", ["doc"]).num_chunks, 1)
        with self.assertRaises(grpc.RpcError) as e:
            self.client.status("missing")
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_wrong_key(self):
        with sharedllm_client.Client(self.target, api_key="wrong-key-0123456789") as c:
            with self.assertRaises(grpc.RpcError) as e:
                c.status("x")
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)


if __name__ == "__main__":
    unittest.main()
