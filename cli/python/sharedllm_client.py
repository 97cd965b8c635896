"""Python client of the SharedLLM long-document question answering service.

Runs on Debian's python3-grpcio. The gRPC stubs are generated on first use from the same
proto/sharedllm/v1/*.proto files the server is built from, with `python3 -m grpc_tools.protoc`
(Debian package python3-grpc-tools), into a cache directory keyed by the protos' content; no
generated code is ever committed.

    from sharedllm_client import Client

    with Client("localhost:50051", api_key="...") as client:
        job = client.upload("book.txt", document_id="book", wait=True)
        for event in client.ask("Who is the narrator?", document_ids=["book"]):
            if event.WhichOneof("event") == "delta":
                print(event.delta.text, end="", flush=True)

Environment: SHAREDLLM_PROTO_DIR (the directory holding sharedllm/v1/*.proto; default: the
repository's proto/ next to this file), SHAREDLLM_STUB_CACHE (where stubs are generated; default
$XDG_CACHE_HOME/sharedllm/pystubs or ~/.cache/sharedllm/pystubs).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import grpc

__all__ = ["Client", "Answer", "load_stubs", "TERMINAL_STATES", "CHUNK_BYTES"]

PROTO_FILES = ("sharedllm/v1/documents.proto", "sharedllm/v1/query.proto")
CHUNK_BYTES = 1 << 20  # the service's limit per upload chunk message


# ---------------------------------------------------------------------------------------------
# Stub generation


def _proto_dir() -> Path:
    env = os.environ.get("SHAREDLLM_PROTO_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "proto"


def _cache_root() -> Path:
    env = os.environ.get("SHAREDLLM_STUB_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sharedllm" / "pystubs"


def _protoc_command(proto_dir: Path, out: Path) -> List[str]:
    """grpc_tools.protoc when installed, else Debian's protoc with grpc_python_plugin."""
    args = ["-I", str(proto_dir), "--python_out", str(out), "--grpc_python_out", str(out)]
    args += list(PROTO_FILES)
    try:
        import grpc_tools  # noqa: F401  (python3-grpc-tools)

        return [sys.executable, "-m", "grpc_tools.protoc"] + args
    except ImportError:
        protoc, plugin = shutil.which("protoc"), shutil.which("grpc_python_plugin")
        if not (protoc and plugin):
            raise RuntimeError(
                "cannot generate the gRPC stubs: install python3-grpc-tools "
                "(apt-get install -y python3-grpc-tools)"
            )
        return [protoc, f"--plugin=protoc-gen-grpc_python={plugin}"] + args


def _generate(proto_dir: Path) -> Path:
    missing = [p for p in PROTO_FILES if not (proto_dir / p).is_file()]
    if missing:
        raise RuntimeError(
            f"protos not found under {proto_dir} ({', '.join(missing)}); set SHAREDLLM_PROTO_DIR"
        )
    digest = hashlib.sha256()
    for p in PROTO_FILES:
        digest.update(p.encode() + b"\0" + (proto_dir / p).read_bytes() + b"\0")
    digest.update(grpc.__version__.encode())
    target = _cache_root() / digest.hexdigest()[:16]
    if (target / "sharedllm" / "v1" / "query_pb2_grpc.py").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".gen-", dir=target.parent))
    try:
        result = subprocess.run(
            _protoc_command(proto_dir, tmp), capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"stub generation failed:\n{result.stderr}")
        for pkg in (tmp / "sharedllm", tmp / "sharedllm" / "v1"):
            (pkg / "__init__.py").touch()
        try:
            os.rename(tmp, target)  # atomic; another process may have won the race
        except OSError:
            if not (target / "sharedllm" / "v1" / "query_pb2_grpc.py").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


class _Stubs:
    def __init__(self, documents_pb2, documents_pb2_grpc, query_pb2, query_pb2_grpc):
        self.documents_pb2 = documents_pb2
        self.documents_pb2_grpc = documents_pb2_grpc
        self.query_pb2 = query_pb2
        self.query_pb2_grpc = query_pb2_grpc


_STUBS: Optional[_Stubs] = None


def load_stubs() -> _Stubs:
    """Generates (once per proto content) and imports the message and service modules."""
    global _STUBS
    if _STUBS is None:
        path = str(_generate(_proto_dir()))
        if path not in sys.path:
            sys.path.insert(0, path)
        _STUBS = _Stubs(
            importlib.import_module("sharedllm.v1.documents_pb2"),
            importlib.import_module("sharedllm.v1.documents_pb2_grpc"),
            importlib.import_module("sharedllm.v1.query_pb2"),
            importlib.import_module("sharedllm.v1.query_pb2_grpc"),
        )
    return _STUBS


# ---------------------------------------------------------------------------------------------
# Client

TERMINAL_STATES = ("READY", "FAILED", "CANCELLED")


class Answer:
    """The result of Client.answer(): the whole text plus the Started and Final messages."""

    def __init__(self, text: str, started, final):
        self.text = text
        self.started = started
        self.final = final

    def __repr__(self) -> str:
        return f"Answer(text={self.text!r})"


def _stream(call) -> Iterator:
    try:
        yield from call
    finally:
        call.cancel()  # a no-op once finished; stops generation when the caller stops early


def _read_pem(value: Union[None, bytes, str, os.PathLike]) -> Optional[bytes]:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


class Client:
    """A connection to the service. RPC failures raise grpc.RpcError (see .code(), .details())."""

    def __init__(
        self,
        target: str,
        api_key: Optional[str] = None,
        *,
        tls: bool = False,
        root_certificates: Union[None, bytes, str, os.PathLike] = None,
        certificate_chain: Union[None, bytes, str, os.PathLike] = None,
        private_key: Union[None, bytes, str, os.PathLike] = None,
        timeout: Optional[float] = None,
    ):
        """target: "HOST:PORT". api_key: sent as "authorization: Bearer KEY".
        TLS is used when tls is true or any PEM is given (bytes or a file path); certificate_chain
        and private_key are the client's certificate for mutual TLS. timeout: the deadline of each
        RPC in seconds (None: none)."""
        self._stubs = load_stubs()
        self._timeout = timeout
        self._metadata: Tuple[Tuple[str, str], ...] = ()
        if api_key:
            self._metadata = (("authorization", f"Bearer {api_key}"),)
        options = [("grpc.max_receive_message_length", 64 << 20)]
        if tls or root_certificates or certificate_chain or private_key:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read_pem(root_certificates),
                private_key=_read_pem(private_key),
                certificate_chain=_read_pem(certificate_chain),
            )
            self._channel = grpc.secure_channel(target, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._documents = self._stubs.documents_pb2_grpc.DocumentServiceStub(self._channel)
        self._query = self._stubs.query_pb2_grpc.QueryServiceStub(self._channel)

    # -- plumbing

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def pb(self) -> _Stubs:
        """The generated modules (documents_pb2, query_pb2, ...), e.g. for enum names."""
        return self._stubs

    def _kw(self, timeout: Optional[float] = None) -> dict:
        t = timeout if timeout is not None else self._timeout
        return {"metadata": self._metadata, "timeout": t}

    def state_name(self, state: int) -> str:
        return self._stubs.documents_pb2.IndexJob.State.Name(state)

    # -- documents

    def upload(
        self,
        source: Union[str, os.PathLike, bytes],
        document_id: str,
        collection_id: str = "",
        name: Optional[str] = None,
        *,
        wait: bool = False,
        on_progress: Optional[Callable[[object], None]] = None,
        timeout: Optional[float] = None,
    ):
        """Uploads a file (path) or bytes as document_id, with its SHA-256, in 1 MiB chunks.
        Returns the IndexJob; with wait=True, follows it (on_progress(job) for each change) and
        returns the terminal job (READY, FAILED or CANCELLED: check job.state)."""
        pb = self._stubs.documents_pb2
        if isinstance(source, bytes):
            data_name, path = "", None
            sha = hashlib.sha256(source).hexdigest()
        else:
            path = Path(source)
            data_name = path.name
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(CHUNK_BYTES), b""):
                    h.update(block)
            sha = h.hexdigest()
        header = pb.UploadHeader(
            document_id=document_id,
            collection_id=collection_id,
            name=data_name if name is None else name,
            sha256=sha,
        )

        def requests() -> Iterator:
            yield pb.UploadDocumentRequest(header=header)
            if path is None:
                for i in range(0, len(source), CHUNK_BYTES):
                    yield pb.UploadDocumentRequest(chunk=source[i : i + CHUNK_BYTES])
            else:
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(CHUNK_BYTES), b""):
                        yield pb.UploadDocumentRequest(chunk=block)

        job = self._documents.UploadDocument(requests(), **self._kw(timeout))
        if on_progress:
            on_progress(job)
        if not wait or self.state_name(job.state) in TERMINAL_STATES:
            return job
        for job in self.watch(document_id, timeout=timeout):
            if on_progress:
                on_progress(job)
        return job

    def status(self, document_id: str, timeout: Optional[float] = None):
        pb = self._stubs.documents_pb2
        return self._documents.GetIndexStatus(
            pb.GetIndexStatusRequest(document_id=document_id), **self._kw(timeout)
        )

    def watch(self, document_id: str, timeout: Optional[float] = None) -> Iterator:
        """Yields the IndexJob each time it changes, until a terminal state."""
        pb = self._stubs.documents_pb2
        yield from self._documents.WatchIndexStatus(
            pb.GetIndexStatusRequest(document_id=document_id), **self._kw(timeout)
        )

    def cancel(self, document_id: str, timeout: Optional[float] = None):
        pb = self._stubs.documents_pb2
        return self._documents.CancelIndexJob(
            pb.CancelIndexJobRequest(document_id=document_id), **self._kw(timeout)
        )

    def get(self, document_id: str, timeout: Optional[float] = None):
        pb = self._stubs.documents_pb2
        return self._documents.GetDocument(
            pb.GetDocumentRequest(document_id=document_id), **self._kw(timeout)
        )

    def list(
        self, collection_id: str = "", page_size: int = 0, timeout: Optional[float] = None
    ) -> Iterator:
        """Yields every Document of the caller (of one collection when given), across pages."""
        pb = self._stubs.documents_pb2
        token = ""
        while True:
            resp = self._documents.ListDocuments(
                pb.ListDocumentsRequest(
                    collection_id=collection_id, page_size=page_size, page_token=token
                ),
                **self._kw(timeout),
            )
            yield from resp.documents
            if not resp.next_page_token or resp.next_page_token == token:
                return
            token = resp.next_page_token

    def delete(self, document_id: str, timeout: Optional[float] = None) -> None:
        pb = self._stubs.documents_pb2
        self._documents.DeleteDocument(
            pb.DeleteDocumentRequest(document_id=document_id), **self._kw(timeout)
        )

    # -- questions

    def _ask_request(self, cls, question, document_ids, collection_id, **options):
        if bool(document_ids) == bool(collection_id):
            raise ValueError("give either document_ids or collection_id")
        kwargs = dict(
            question=question,
            document_ids=list(document_ids or []),
            collection_id=collection_id or "",
        )
        if options:
            kwargs["options"] = self._stubs.query_pb2.GenerationOptions(**options)
        return cls(**kwargs)

    def ask(
        self,
        question: str,
        document_ids: Optional[Sequence[str]] = None,
        collection_id: str = "",
        *,
        max_tokens: int = 0,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 0.0,
        seed: int = 0,
        stop: Iterable[str] = (),
        timeout: Optional[float] = None,
    ) -> Iterator:
        """Streams the answer: yields AskResponse messages as they arrive, one `started` (the
        selected nodes), then `delta`s (answer text), then `final` (finish reason, usage,
        timings); use msg.WhichOneof("event"). Closing the iterator early cancels the call, and
        the server stops generating."""
        request = self._ask_request(
            self._stubs.query_pb2.AskRequest,
            question,
            document_ids,
            collection_id,
            max_tokens=max_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            stop=list(stop),
        )
        return _stream(self._query.Ask(request, **self._kw(timeout)))

    def answer(self, question: str, document_ids=None, collection_id: str = "", **kw) -> Answer:
        """ask() collected: the whole answer text with its Started and Final messages."""
        text, started, final = [], None, None
        for msg in self.ask(question, document_ids, collection_id, **kw):
            kind = msg.WhichOneof("event")
            if kind == "started":
                started = msg.started
            elif kind == "delta":
                text.append(msg.delta.text)
            elif kind == "final":
                final = msg.final
        return Answer("".join(text), started, final)

    def retrieve(
        self,
        question: str,
        document_ids: Optional[Sequence[str]] = None,
        collection_id: str = "",
        timeout: Optional[float] = None,
    ):
        """The RetrieveResponse: the nodes Ask would select, without generating."""
        request = self._ask_request(
            self._stubs.query_pb2.RetrieveRequest, question, document_ids, collection_id
        )
        return self._query.Retrieve(request, **self._kw(timeout))

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Waits until the channel connects (raises grpc.FutureTimeoutError otherwise)."""
        grpc.channel_ready_future(self._channel).result(timeout=timeout)


def _main() -> int:
    """`python3 sharedllm_client.py --generate`: generate the stubs and print where they are."""
    if sys.argv[1:] == ["--generate"]:
        print(_generate(_proto_dir()))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(_main())
