#include "service/query_service.h"

#include "service/encoding.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <set>

namespace sharedllm::service {
namespace {

using Clock = std::chrono::steady_clock;
using grpc::Status;
using grpc::StatusCode;

double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// `r.begin`/`r.end` are within the chunk (NodeRecord); the proto's span is in the document's
// tokens, and chunk c starts at token c * chunk_size.
void FillNode(const DocumentVectors& doc, const SelectedRef& r, int64_t kept, int64_t chunk_size,
              sharedllm::v1::SelectedNode* out) {
  const int64_t offset = r.chunk * chunk_size;
  out->set_document_id(doc.document_id);
  out->set_chunk(static_cast<int32_t>(r.chunk));
  out->set_level(static_cast<int32_t>(r.level));
  out->set_index(static_cast<int32_t>(r.index));
  out->set_token_begin(offset + r.begin);
  out->set_token_end(offset + r.end);
  out->set_kept_positions(static_cast<int32_t>(kept));
}

}  // namespace

Scheduler::Admission::~Admission() {
  if (s_) s_->Release();
}

absl::StatusOr<Scheduler::Admission> Scheduler::Admit(grpc::ServerContext* context) {
  std::unique_lock<std::mutex> lock(mu_);
  const bool slot_free = running_ < options_.max_running && waiting_.empty();
  if (!slot_free && static_cast<int>(waiting_.size()) >= options_.max_waiting) {
    return absl::ResourceExhaustedError("too many questions waiting (" +
                                        std::to_string(options_.max_waiting) + ")");
  }
  const uint64_t ticket = next_ticket_++;
  waiting_.push_back(ticket);
  metrics_.SetRequestsWaiting(static_cast<int64_t>(waiting_.size()));
  // First come, first served: a request runs when a slot is free and it heads the queue, so a
  // newcomer never overtakes a waiter.
  while (!(running_ < options_.max_running && waiting_.front() == ticket)) {
    cv_.wait_for(lock, std::chrono::milliseconds(50));
    const bool expired = context->deadline() < std::chrono::system_clock::now();
    if (context->IsCancelled() || expired) {
      waiting_.erase(std::find(waiting_.begin(), waiting_.end(), ticket));
      metrics_.SetRequestsWaiting(static_cast<int64_t>(waiting_.size()));
      cv_.notify_all();  // the next waiter may now head the queue
      return expired ? absl::DeadlineExceededError("deadline passed while queued")
                     : absl::CancelledError("cancelled while queued");
    }
  }
  waiting_.pop_front();
  ++running_;
  metrics_.SetRequestsWaiting(static_cast<int64_t>(waiting_.size()));
  metrics_.SetRequestsRunning(running_);
  cv_.notify_all();  // the new head may also find a free slot
  return Admission(this);
}

void Scheduler::Release() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    --running_;
    metrics_.SetRequestsRunning(running_);
  }
  cv_.notify_all();
}

absl::Status QueryServiceImpl::CheckRequest(
    const google::protobuf::RepeatedPtrField<std::string>& ids, const std::string& collection,
    const std::string& question) const {
  if (question.empty()) return absl::InvalidArgumentError("the question is empty");
  if (static_cast<int64_t>(question.size()) > limits_.max_question_bytes) {
    return absl::InvalidArgumentError("the question exceeds " +
                                      std::to_string(limits_.max_question_bytes) + " bytes");
  }
  if (ids.empty() == collection.empty()) {
    return absl::InvalidArgumentError("give document_ids or a collection_id (not both)");
  }
  if (!collection.empty() && !ValidId(collection)) {
    return absl::InvalidArgumentError("bad collection_id");
  }
  if (ids.size() > limits_.max_documents_per_ask) {
    return absl::InvalidArgumentError("at most " + std::to_string(limits_.max_documents_per_ask) +
                                      " documents per question");
  }
  std::set<std::string> seen;
  for (const auto& id : ids) {
    if (!ValidId(id)) return absl::InvalidArgumentError("bad document_id '" + Clip(id) + "'");
    // Each id would be loaded (and its nodes read) once per mention.
    if (!seen.insert(id).second) {
      return absl::InvalidArgumentError("document_id '" + id + "' is given more than once");
    }
  }
  return absl::OkStatus();
}

absl::Status CheckUnchanged(const TreeStore& store, const std::vector<DocumentMeta>& metas,
                            const std::vector<DocumentVectors>& documents) {
  for (size_t d = 0; d < metas.size() && d < documents.size(); ++d) {
    if (documents[d].chunks.empty()) continue;
    const DocumentMeta& was = metas[d];
    auto now = store.GetDocument(was.tenant, was.document_id);
    if (!now.ok() || now->created_unix_ms != was.created_unix_ms || now->sha256 != was.sha256 ||
        now->state != kDocumentReady) {
      return absl::AbortedError("document " + was.document_id +
                                " changed while the question read it (deleted or uploaded again); "
                                "ask again");
    }
  }
  return absl::OkStatus();
}

int64_t QueryServiceImpl::Retrieval::Position(size_t document, int64_t chunk) const {
  const retrieval::ChunkScore key{static_cast<int32_t>(document), chunk, 0};
  auto it = std::lower_bound(read.begin(), read.end(), key,
                             [](const retrieval::ChunkScore& a, const retrieval::ChunkScore& b) {
                               return std::make_pair(a.doc, a.chunk) < std::make_pair(b.doc, b.chunk);
                             });
  return it - read.begin();
}

absl::StatusOr<QueryServiceImpl::Retrieval> QueryServiceImpl::Search(
    const std::string& tenant, const google::protobuf::RepeatedPtrField<std::string>& ids,
    const std::string& collection, const std::string& question, int64_t max_chunks) {
  const auto start = Clock::now();
  if (absl::Status s = CheckRequest(ids, collection, question); !s.ok()) return s;
  auto budget = engine_.ReadBudget(max_chunks);
  if (!budget.ok()) return budget.status();
  std::vector<DocumentMeta> docs;
  if (!collection.empty()) {
    // A collection of any size: its chunks compete for the one budget.
    std::string token;
    do {
      auto page = store_.ListDocuments(tenant, collection, token, 1000);
      if (!page.ok()) return page.status();
      for (auto& m : page->documents) {
        if (m.state == kDocumentReady) docs.push_back(std::move(m));
      }
      token = page->next_page_token;
    } while (!token.empty());
    if (docs.empty()) return absl::NotFoundError("collection " + collection + " has no READY documents");
  } else {
    for (const auto& id : ids) {
      auto meta = store_.GetDocument(tenant, id);
      if (!meta.ok()) return meta.status();
      if (meta->state != kDocumentReady) {
        return absl::FailedPreconditionError("document " + id + " is not READY (" + meta->state + ")");
      }
      docs.push_back(*meta);
    }
  }
  Retrieval r;
  r.budget = *budget;
  std::vector<int64_t> chunks_per_doc;
  std::map<std::string, int32_t> index_of;
  for (const auto& m : docs) {
    if (absl::Status s = CheckDocumentFingerprint(m, engine_.fingerprint()); !s.ok()) return s;
    index_of[m.document_id] = static_cast<int32_t>(r.documents.size());
    r.documents.push_back({m.document_id, m.num_chunks, {}, {}});
    r.metas.push_back(m);
    chunks_per_doc.push_back(m.num_chunks);
    r.total_chunks += m.num_chunks;
  }
  std::vector<retrieval::ChunkScore> scores;
  r.all = retrieval::ReadsEveryChunk(r.total_chunks, r.budget);
  if (!r.all) {
    // The retrieval index: per question term, one prefix scan of the collection's postings (or
    // of each document's), stopped one past the common-term limit, so that the work is bounded
    // by the budget whatever the size of the scope.
    const int64_t limit = retrieval::CommonTermLimit(r.budget);
    std::vector<std::vector<retrieval::Posting>> postings;
    for (const std::string& term : retrieval::QueryTerms(question)) {
      auto& list = postings.emplace_back();
      int64_t scanned = 0;
      for (size_t d = 0; d < (collection.empty() ? docs.size() : 1) && scanned <= limit; ++d) {
        auto found = collection.empty()
                         ? store_.LoadPostings(tenant, term, docs[d].collection_id,
                                               docs[d].document_id, limit + 1 - scanned)
                         : store_.LoadPostings(tenant, term, collection, "", limit + 1);
        if (!found.ok()) return found.status();
        scanned += static_cast<int64_t>(found->size());
        for (const TermPosting& p : *found) {
          auto it = index_of.find(p.document_id);
          if (it != index_of.end() && p.chunk < chunks_per_doc[it->second]) {
            list.push_back({it->second, p.chunk, p.count, p.length});
          }
        }
      }
      if (scanned > limit) list.clear();  // too common to choose by: it does not score
    }
    scores = retrieval::ScoreBm25(postings, r.total_chunks, limit);
  }
  r.read = retrieval::ChooseChunks(scores, chunks_per_doc, r.budget);
  for (const auto& c : r.read) r.documents[c.doc].chunks.push_back(c.chunk);
  for (auto& d : r.documents) {
    if (d.chunks.empty()) continue;
    auto vectors = d.chunks.size() == static_cast<size_t>(d.num_chunks)
                       ? store_.LoadVectors(tenant, d.document_id)
                       : store_.LoadVectors(tenant, d.document_id, d.chunks);
    if (!vectors.ok()) return vectors.status();
    d.nodes = std::move(*vectors);
  }
  auto prompt = engine_.PromptIds(question);
  if (!prompt.ok()) return prompt.status();
  r.prompt_ids = std::move(*prompt);
  auto selected = engine_.Select(r.prompt_ids, r.documents);
  if (!selected.ok()) return selected.status();
  r.selected = std::move(*selected);
  r.seconds = Since(start);
  return r;
}

template <typename Message>
void QueryServiceImpl::FillReading(const Retrieval& r, Message* out) const {
  for (const auto& c : r.read) {
    auto* chunk = out->add_chunks_read();
    chunk->set_document_id(r.documents[c.doc].document_id);
    chunk->set_chunk(static_cast<int32_t>(c.chunk));
    chunk->set_score(c.score);
  }
  out->set_chunk_budget(static_cast<int32_t>(r.budget));
  out->set_chunk_selection(r.all ? "all" : "bm25");
}

Status QueryServiceImpl::Ask(grpc::ServerContext* context, const sharedllm::v1::AskRequest* request,
                             grpc::ServerWriter<sharedllm::v1::AskResponse>* writer) {
  const auto start = Clock::now();
  Status status = DoAsk(context, request, writer);
  metrics_.AskFinished(StatusCodeName(status.error_code()), Since(start));
  return status;
}

Status QueryServiceImpl::DoAsk(grpc::ServerContext* context, const sharedllm::v1::AskRequest* request,
                               grpc::ServerWriter<sharedllm::v1::AskResponse>* writer) {
  auto tenant = keys_.Authenticate(*context);
  if (!tenant.ok()) return ToGrpcStatus(tenant.status());
  if (draining_) return Status(StatusCode::UNAVAILABLE, "the server is draining");
  const auto& o = request->options();
  AnswerOptions options;
  options.max_tokens = o.max_tokens() == 0 ? 64 : o.max_tokens();
  options.temperature = o.temperature();
  options.top_k = o.top_k();
  options.top_p = o.top_p() == 0 ? 1.0 : o.top_p();
  options.seed = o.seed();
  if (options.max_tokens < 1 || options.max_tokens > limits_.max_answer_tokens ||
      !(options.temperature >= 0) || options.top_k < 0 ||  // NaN fails the comparisons
      !(options.top_p >= 0 && options.top_p <= 1)) {
    return Status(StatusCode::INVALID_ARGUMENT,
                  "options: max_tokens 1.." + std::to_string(limits_.max_answer_tokens) +
                      ", temperature >= 0, top_k >= 0, top_p in [0, 1]");
  }
  if (o.stop_size() > 4) return Status(StatusCode::INVALID_ARGUMENT, "at most 4 stop strings");
  for (const auto& s : o.stop()) {
    if (s.empty() || s.size() > 64) return Status(StatusCode::INVALID_ARGUMENT, "stop strings: 1-64 bytes");
    options.stop.push_back(s);
  }
  // Malformed requests are refused before they take a place in the queue.
  if (absl::Status s = CheckRequest(request->document_ids(), request->collection_id(),
                                    request->question());
      !s.ok()) {
    return ToGrpcStatus(s);
  }
  const auto queued_at = Clock::now();
  auto admission = scheduler_.Admit(context);
  if (!admission.ok()) return ToGrpcStatus(admission.status());
  const double queue_seconds = Since(queued_at);
  metrics_.ObserveQueue(queue_seconds);

  auto retrieval = Search(*tenant, request->document_ids(), request->collection_id(),
                          request->question(), request->max_chunks());
  if (!retrieval.ok()) return ToGrpcStatus(retrieval.status());
  metrics_.ObserveRetrieval(retrieval->seconds);

  // Load the selected nodes' keys/values, one batch per document; a parent comes with its left
  // chain (the rows it shares with it are stored there once).
  const auto kv_start = Clock::now();
  std::vector<ReadNode> nodes;
  std::vector<size_t> doc_of;  // per node: its document
  std::map<size_t, std::vector<NodeRef>> by_doc;
  for (const auto& r : retrieval->selected) {
    by_doc[r.document].push_back({r.chunk, r.level, r.index});
    for (const auto& [level, index] : engine_.LeftChain(r.level, r.index)) {
      by_doc[r.document].push_back({r.chunk, level, index});
    }
  }
  for (auto& [d, refs] : by_doc) {
    auto loaded = store_.LoadNodes(*tenant, retrieval->documents[d].document_id, refs);
    if (!loaded.ok()) return ToGrpcStatus(loaded.status());
    for (size_t k = 0; k < loaded->size();) {  // in the order of refs: a node, then its chain
      ReadNode node;
      node.record = std::move((*loaded)[k++]);
      node.chunk_position = retrieval->Position(d, node.record.chunk);
      for (size_t c = engine_.LeftChain(node.record.level, node.record.index).size(); c > 0; --c) {
        node.left.push_back(std::move((*loaded)[k++]));
      }
      nodes.push_back(std::move(node));
      doc_of.push_back(d);
    }
  }
  if (absl::Status s = CheckUnchanged(store_, retrieval->metas, retrieval->documents); !s.ok()) {
    return ToGrpcStatus(s);
  }
  const double kv_seconds = Since(kv_start);
  metrics_.ObserveKvLoad(kv_seconds);

  sharedllm::v1::AskResponse started;
  started.mutable_started()->set_num_chunks(static_cast<int32_t>(retrieval->total_chunks));
  FillReading(*retrieval, started.mutable_started());
  for (size_t i = 0; i < nodes.size(); ++i) {
    const NodeRecord& r = nodes[i].record;
    SelectedRef ref{doc_of[i], r.chunk, r.level, r.index, r.begin, r.end};
    FillNode(retrieval->documents[doc_of[i]], ref, engine_.KeptPositions(r.level, r.end - r.begin),
             engine_.chunk_size(), started.mutable_started()->add_nodes());
  }
  if (!writer->Write(started)) {
    // The call is dead: past its deadline (counted as such in the metrics) or cancelled.
    if (context->deadline() < std::chrono::system_clock::now()) {
      return Status(StatusCode::DEADLINE_EXCEEDED, "deadline exceeded before the answer started");
    }
    return Status(StatusCode::CANCELLED, "client went away");
  }

  const auto gen_start = Clock::now();
  auto last_token = gen_start;
  bool first = true;
  bool client_gone = false;
  auto answer = engine_.Answer(
      retrieval->prompt_ids, nodes, static_cast<int64_t>(retrieval->read.size()), options,
      [&](const std::string& delta) {
        const auto now = Clock::now();
        if (!first) metrics_.ObserveInterTokenLatency(std::chrono::duration<double>(now - last_token).count());
        first = false;
        last_token = now;
        if (context->IsCancelled() || context->deadline() < std::chrono::system_clock::now()) {
          return false;  // stops the model loop at once
        }
        // TokenDelta.text is a proto `string`: it must be valid UTF-8 or the client cannot parse
        // the message. The decoder holds back incomplete characters, but the tokenizer lets
        // some ill-formed byte runs through (overlong forms, surrogates), so enforce it here.
        sharedllm::v1::AskResponse msg;
        msg.mutable_delta()->set_text(ToValidUtf8(delta));
        if (!writer->Write(msg)) {
          client_gone = true;
          return false;
        }
        return true;
      });
  if (!answer.ok()) return ToGrpcStatus(answer.status());
  metrics_.ObserveTimeToFirstToken(queue_seconds + retrieval->seconds + kv_seconds +
                                   answer->time_to_first_token_seconds);
  metrics_.AddPromptTokens(answer->prompt_tokens);
  metrics_.AddGenerationTokens(answer->completion_tokens);
  if (answer->finish_reason == "cancelled") {
    if (context->deadline() < std::chrono::system_clock::now()) {
      return Status(StatusCode::DEADLINE_EXCEEDED, "deadline exceeded while generating");
    }
    return Status(StatusCode::CANCELLED, client_gone ? "client went away" : "cancelled");
  }
  sharedllm::v1::AskResponse final_msg;
  auto* f = final_msg.mutable_final();
  int32_t finest = 0;
  for (const auto& n : started.started().nodes()) finest = std::max(finest, n.level());
  for (const auto& n : started.started().nodes()) {
    if (n.level() == finest) *f->add_citations() = n;
  }
  *f->mutable_chunks_read() = started.started().chunks_read();
  f->set_finish_reason(answer->finish_reason == "stop"  ? sharedllm::v1::Final::STOP
                       : answer->finish_reason == "eos" ? sharedllm::v1::Final::EOS
                                                        : sharedllm::v1::Final::LENGTH);
  f->mutable_usage()->set_prompt_tokens(answer->prompt_tokens);
  f->mutable_usage()->set_completion_tokens(answer->completion_tokens);
  int64_t context_tokens = 0;
  for (const auto& d : retrieval->documents) {
    for (const auto& n : d.nodes) {
      if (n.level == 1) context_tokens += n.end - n.begin;
    }
  }
  f->mutable_usage()->set_context_tokens(context_tokens);
  f->mutable_usage()->set_context_positions(answer->context_positions);
  auto* t = f->mutable_timings();
  t->set_queue_seconds(queue_seconds);
  t->set_retrieval_seconds(retrieval->seconds);
  t->set_kv_load_seconds(kv_seconds);
  t->set_time_to_first_token_seconds(answer->time_to_first_token_seconds);
  t->set_decode_seconds(answer->decode_seconds);
  t->set_total_seconds(Since(queued_at));
  writer->Write(final_msg);
  return Status::OK;
}

Status QueryServiceImpl::Retrieve(grpc::ServerContext* context,
                                  const sharedllm::v1::RetrieveRequest* request,
                                  sharedllm::v1::RetrieveResponse* response) {
  auto tenant = keys_.Authenticate(*context);
  if (!tenant.ok()) return ToGrpcStatus(tenant.status());
  if (draining_) return Status(StatusCode::UNAVAILABLE, "the server is draining");
  if (absl::Status s = CheckRequest(request->document_ids(), request->collection_id(),
                                    request->question());
      !s.ok()) {
    return ToGrpcStatus(s);
  }
  auto admission = scheduler_.Admit(context);
  if (!admission.ok()) return ToGrpcStatus(admission.status());
  auto r = Search(*tenant, request->document_ids(), request->collection_id(), request->question(),
                  request->max_chunks());
  if (!r.ok()) return ToGrpcStatus(r.status());
  if (absl::Status s = CheckUnchanged(store_, r->metas, r->documents); !s.ok()) return ToGrpcStatus(s);
  FillReading(*r, response);
  for (const auto& s : r->selected) {
    FillNode(r->documents[s.document], s, engine_.KeptPositions(s.level, s.end - s.begin), engine_.chunk_size(),
             response->add_nodes());
  }
  response->set_num_chunks(static_cast<int32_t>(r->total_chunks));
  response->set_retrieval_seconds(r->seconds);
  return Status::OK;
}

}  // namespace sharedllm::service
