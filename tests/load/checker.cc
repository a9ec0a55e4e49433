#include "load/checker.h"

#include <algorithm>
#include <set>

namespace chatllm::load {
namespace {

std::string Quote(const std::string& s) { return "'" + s.substr(0, 80) + "'"; }
std::string Seq(int64_t seq) { return "seq " + std::to_string(seq); }

// One request as the server should see it: the appends that carried one
// Idempotency-Key (retries, copies sent at once, a cut stream and its
// resend), or a single append without a key.
struct Request {
  std::vector<const AppendRecord*> records;
  size_t file = 0;
  Outcome outcome = Outcome::kFail;  // kOk if any record was; else kUnknown if any was.
  int64_t invoke_us = INT64_MAX;     // The first record's start.
  int64_t acked_us = INT64_MAX;      // The first 2xx's completion.
  int64_t seq = 0;                   // Acknowledged user seq (0: none known).
  int64_t assistant_seq = 0;         // Acknowledged answer seq (0: none known).
  int64_t stored = 0;                // Where it is stored, when known (acknowledged, or a unique text).
  const AppendRecord& first() const { return *records.front(); }
};

// Acknowledged requests of one file ordered by acknowledgement, with the
// running maximum of their stored seq: "the highest seq acknowledged before
// time t".
class AckedBefore {
 public:
  explicit AckedBefore(const std::vector<const Request*>& requests) {
    for (const Request* r : requests) {
      if (r->outcome == Outcome::kOk && r->stored > 0) done_.emplace_back(r->acked_us, r->stored);
    }
    std::sort(done_.begin(), done_.end());
    for (size_t i = 0; i < done_.size(); ++i) done_[i].second = std::max(i ? done_[i - 1].second : 0, done_[i].second);
  }
  // Highest seq among requests acknowledged strictly before t, or 0.
  int64_t MaxSeqBefore(int64_t t) const {
    auto end = std::lower_bound(done_.begin(), done_.end(), std::make_pair(t, INT64_MIN));
    return end == done_.begin() ? 0 : (end - 1)->second;
  }

 private:
  std::vector<std::pair<int64_t, int64_t>> done_;  // (acked_us, running max seq)
};

bool CompleteAnswer(const StoredMessage& m) {
  return m.finish_reason.empty() || m.finish_reason == "stop" || m.finish_reason == "length";
}

}  // namespace

std::vector<Violation> CheckSession(const std::vector<StoredMessage>& h, bool gone, const SessionRecords& records,
                                    bool echo, CheckCounts* counts) {
  std::vector<Violation> out;
  auto add = [&out](std::string kind, std::string detail) { out.push_back({std::move(kind), std::move(detail)}); };

  // Deletes: an acknowledged one leaves the session gone for good; a
  // session that is gone was deleted by someone.
  int64_t deleted_at = INT64_MAX;  // Completion of the first acknowledged delete (per file 0..n: one clock each).
  size_t deleted_file = 0;
  bool may_be_deleted = false;
  for (size_t f = 0; f < records.deletes_by_file.size(); ++f) {
    for (const DeleteRecord* d : records.deletes_by_file[f]) {
      const Outcome o = OutcomeOf(d->status);
      may_be_deleted |= o != Outcome::kFail || d->status == 404;
      if (d->status == 204 && d->complete_us < deleted_at) {
        deleted_at = d->complete_us;
        deleted_file = f;
      }
    }
  }
  if (deleted_at != INT64_MAX) {
    if (!gone) add("deleted", "acknowledged as deleted at " + std::to_string(deleted_at) + "us, but it is readable");
    // No write may be acknowledged to it once the delete was, no read may
    // find it, no list may name it.
    if (deleted_file < records.appends_by_file.size()) {
      for (const AppendRecord* a : records.appends_by_file[deleted_file]) {
        if (a->outcome == Outcome::kOk && a->invoke_us > deleted_at) {
          add("deleted", Quote(a->content) + " was acknowledged (" + Seq(a->seq) + ") though sent after the delete");
        }
      }
    }
    if (deleted_file < records.reads_by_file.size()) {
      for (const ReadRecord* r : records.reads_by_file[deleted_file]) {
        if (r->status == 200 && r->invoke_us > deleted_at) {
          add("deleted", "a read at " + std::to_string(r->invoke_us) + "us found it after its delete was acknowledged");
        }
      }
    }
    if (deleted_file < records.lists_by_file.size()) {
      for (const ListRecord* l : records.lists_by_file[deleted_file]) {
        if (l->invoke_us > deleted_at) {
          add("deleted", "GET /v1/sessions at " + std::to_string(l->invoke_us) + "us listed it after its delete");
        }
      }
    }
  }
  // A 404 to a read is only right once someone has asked for a delete.
  for (size_t f = 0; f < records.reads_by_file.size(); ++f) {
    for (const ReadRecord* r : records.reads_by_file[f]) {
      if (r->status != 404) continue;
      bool asked = false;
      for (size_t g = 0; g < records.deletes_by_file.size() && !asked; ++g) {
        for (const DeleteRecord* d : records.deletes_by_file[g]) asked |= g != f || d->invoke_us < r->complete_us;
      }
      if (!asked) add("lost", "a read at " + std::to_string(r->invoke_us) + "us was answered 404; nobody deleted it");
    }
  }
  // A 404 to a write is only right once someone has asked for a delete.
  for (size_t f = 0; f < records.appends_by_file.size(); ++f) {
    for (const AppendRecord* a : records.appends_by_file[f]) {
      if (a->status != 404) continue;
      bool asked = false;
      for (size_t g = 0; g < records.deletes_by_file.size() && !asked; ++g) {
        for (const DeleteRecord* d : records.deletes_by_file[g]) asked |= g != f || d->invoke_us < a->complete_us;
      }
      if (!asked) add("lost", Quote(a->content) + " was answered 404 though no client had deleted the session");
    }
  }
  if (gone) {
    if (!may_be_deleted) add("lost", "the session answers 404, and no client deleted it");
    if (may_be_deleted) ++counts->deleted;
    return out;
  }

  for (size_t i = 0; i < h.size(); ++i) {
    if (h[i].seq != static_cast<int64_t>(i + 1)) {
      add("dense", "position " + std::to_string(i + 1) + " holds seq " + std::to_string(h[i].seq));
      return out;  // Everything below indexes by seq.
    }
  }
  // A resumed stream: what its client assembled is the answer stored at
  // the seq the stream named, whole.
  for (const auto& per_file : records.appends_by_file) {
    for (const AppendRecord* a : per_file) {
      if (a->resumed_seq == 0) continue;
      ++counts->resumed;
      const int64_t at = a->resumed_seq;
      if (at > static_cast<int64_t>(h.size()) || h[at - 1].role != "assistant") {
        add("resume", "a resumed stream of " + Quote(a->content) + " ended with answer " + Seq(at) +
                          ", which is not a stored answer");
      } else if (h[at - 1].content != a->resumed_text) {
        add("resume", "a resumed stream of " + Quote(a->content) + " assembled " + Quote(a->resumed_text) +
                          ", but answer " + Seq(at) + " is " + Quote(h[at - 1].content));
      }
    }
  }
  std::map<int64_t, int> complete_answers;  // user seq -> complete answers to it
  for (const StoredMessage& m : h) {
    if (m.role != "assistant") continue;
    const int64_t r = m.reply_to;
    if (r < 1 || r >= m.seq || h[r - 1].role != "user") {
      add("dense", "assistant " + Seq(m.seq) + " replies to " + std::to_string(r));
      continue;
    }
    if (CompleteAnswer(m) && ++complete_answers[r] == 2) {
      add("answer", "user " + Seq(r) + " has two complete answers (the turn ran twice)");
    }
    if (echo && (m.provider.empty() || m.provider == "echo")) {
      const std::string& asked = h[r - 1].content;
      if (CompleteAnswer(m) ? m.content != asked : asked.compare(0, m.content.size(), m.content) != 0) {
        add("dense", "assistant " + Seq(m.seq) + " does not repeat user " + Seq(r));
      }
    }
  }

  std::map<std::string, std::vector<int64_t>> stored;  // user content -> seqs
  for (const StoredMessage& m : h) {
    if (m.role == "user") stored[m.content].push_back(m.seq);
  }

  // Requests: records grouped by key.
  std::vector<Request> requests;
  std::map<std::string, size_t> by_key;
  for (size_t f = 0; f < records.appends_by_file.size(); ++f) {
    for (const AppendRecord* a : records.appends_by_file[f]) {
      size_t i;
      auto it = a->key.empty() ? by_key.end() : by_key.find(a->key);
      if (it != by_key.end()) {
        i = it->second;
      } else {
        i = requests.size();
        requests.emplace_back();
        requests.back().file = f;
        if (!a->key.empty()) by_key[a->key] = i;
      }
      requests[i].records.push_back(a);
    }
  }
  std::map<std::string, int> requests_with;  // content -> requests that sent it
  for (Request& r : requests) {
    ++requests_with[r.first().content];
    bool unknown = false;
    for (const AppendRecord* a : r.records) {
      r.invoke_us = std::min(r.invoke_us, a->invoke_us);
      if (a->outcome == Outcome::kUnknown) unknown = true;
      if (a->outcome != Outcome::kOk) continue;
      r.outcome = Outcome::kOk;
      r.acked_us = std::min(r.acked_us, a->complete_us);
      if (a->seq != 0 && r.seq != 0 && a->seq != r.seq) {
        add("key", "key " + Quote(a->key) + " was acknowledged as " + Seq(r.seq) + " and as " + Seq(a->seq));
      }
      if (a->seq != 0) r.seq = a->seq;
      if (a->assistant_seq != 0 && r.assistant_seq != 0 && a->assistant_seq != r.assistant_seq) {
        add("key",
            "key " + Quote(a->key) + " was answered as " + Seq(r.assistant_seq) + " and as " + Seq(a->assistant_seq));
      }
      if (a->assistant_seq != 0) r.assistant_seq = a->assistant_seq;
    }
    if (r.outcome != Outcome::kOk && unknown) r.outcome = Outcome::kUnknown;
    // One key, one request: a retry with the same body is never "another request".
    for (const AppendRecord* a : r.records) {
      if (!a->key.empty() && a->code == "idempotency_key_reused") {
        add("key", Quote(a->content) + ": a retry with key " + Quote(a->key) +
                       " and the same body was refused as a different request");
      }
    }
    if (!r.first().key.empty()) ++counts->keyed;
  }

  // Each stored user message names the request that wrote it: with the
  // records' X-Request-Ids (and a server that stores them), match every one
  // to exactly one request.
  bool have_ids = !requests.empty();
  for (const StoredMessage& m : h) have_ids = have_ids && (m.role != "user" || !m.request_id.empty());
  std::map<std::string, size_t> by_id;
  for (size_t i = 0; i < requests.size(); ++i) {
    for (const AppendRecord* a : requests[i].records) {
      have_ids = have_ids && !a->request_ids.empty();
      for (const std::string& id : a->request_ids) by_id[id] = i;
    }
  }
  if (have_ids) {
    std::vector<std::vector<int64_t>> owned(requests.size());
    for (const StoredMessage& m : h) {
      if (m.role != "user") continue;
      auto it = by_id.find(m.request_id);
      if (it == by_id.end()) {
        add("phantom", Seq(m.seq) + " " + Quote(m.content) + " was stored by request '" + m.request_id +
                           "', which no client sent");
        continue;
      }
      const Request& q = requests[it->second];
      if (m.content != q.first().content) {
        add("acknowledged", Seq(m.seq) + " was stored by the request that sent " + Quote(q.first().content) +
                                " but holds " + Quote(m.content));
      }
      owned[it->second].push_back(m.seq);
    }
    for (size_t i = 0; i < requests.size(); ++i) {
      const Request& q = requests[i];
      const std::string what =
          Quote(q.first().content) + (q.first().key.empty() ? "" : " (key " + Quote(q.first().key) + ")");
      if (owned[i].size() > 1) {
        add("duplicate", what + " is stored " + std::to_string(owned[i].size()) + " times (" + Seq(owned[i][0]) + ", " +
                             Seq(owned[i][1]) + ")");
      }
      if (q.outcome == Outcome::kOk && owned[i].empty())
        add("acknowledged", what + " was acknowledged but is not stored");
      if (q.outcome == Outcome::kOk && q.seq != 0 && !owned[i].empty() && owned[i][0] != q.seq) {
        add("acknowledged", what + " was acknowledged as " + Seq(q.seq) + " but is stored at " + Seq(owned[i][0]));
      }
      if (q.outcome == Outcome::kFail && !owned[i].empty()) add("refused", what + " was refused but is stored");
    }
  }

  std::set<std::string> sent;
  std::map<int64_t, const Request*> acked_at;  // user seq -> the request acknowledged there
  for (Request& r : requests) {
    const std::string& content = r.first().content;
    sent.insert(content);
    auto it = stored.find(content);
    const size_t n = it == stored.end() ? 0 : it->second.size();
    const bool unique = requests_with[content] == 1;
    if (!unique) ++counts->shared;
    switch (r.outcome) {
      case Outcome::kOk:
        ++counts->acknowledged;
        if (r.seq != 0) {
          if (r.seq > static_cast<int64_t>(h.size()) || h[r.seq - 1].role != "user" ||
              h[r.seq - 1].content != content) {
            add("acknowledged",
                Quote(content) + " was acknowledged as " + Seq(r.seq) + ", which holds " +
                    (r.seq > static_cast<int64_t>(h.size()) ? std::string("nothing") : Quote(h[r.seq - 1].content)));
            break;
          }
          auto [other, inserted] = acked_at.emplace(r.seq, &r);
          if (!inserted) {
            add("acknowledged",
                Quote(content) + " and another request without a shared key were both acknowledged as " + Seq(r.seq));
          }
          r.stored = r.seq;
          if (r.assistant_seq != 0 &&
              (r.assistant_seq > static_cast<int64_t>(h.size()) || h[r.assistant_seq - 1].role != "assistant" ||
               h[r.assistant_seq - 1].reply_to != r.seq)) {
            add("acknowledged", "the answer to " + Quote(content) + " was acknowledged as " + Seq(r.assistant_seq) +
                                    ", which is not an answer to " + Seq(r.seq));
          }
        }
        if (unique && n != 1) {
          add("acknowledged", Quote(content) + " (client " + std::to_string(r.first().client) + ", status " +
                                  std::to_string(r.records.back()->status) + ") is stored " + std::to_string(n) +
                                  " times");
        } else if (unique && r.seq == 0) {
          r.stored = it->second[0];
        }
        break;
      case Outcome::kFail:
        ++counts->refused;
        if (unique && n != 0) {
          add("refused",
              Quote(content) + " was refused (" + std::to_string(r.records.back()->status) + ") but is stored");
        }
        break;
      case Outcome::kUnknown:
        ++counts->unknown;
        if (unique && n > 1) add("unknown", Quote(content) + " is stored " + std::to_string(n) + " times");
        if (unique && n == 1) {
          ++counts->unknown_stored;
          r.stored = it->second[0];
        }
        break;
    }
  }
  // A text several requests sent: stored at most once per request that
  // may have stored it (acknowledged or unknown).
  for (const auto& [content, n] : requests_with) {
    if (n < 2) continue;
    auto it = stored.find(content);
    const size_t copies = it == stored.end() ? 0 : it->second.size();
    size_t may = 0;
    for (const Request& r : requests) may += r.first().content == content && r.outcome != Outcome::kFail;
    if (copies > may) {
      add("unknown", Quote(content) + " is stored " + std::to_string(copies) + " times; only " + std::to_string(may) +
                         " requests may have stored it");
    }
  }
  for (const auto& [content, seqs] : stored) {
    if (!sent.count(content)) add("phantom", Seq(seqs[0]) + " " + Quote(content) + " was never sent");
  }

  for (size_t f = 0; f < records.appends_by_file.size(); ++f) {
    std::vector<const Request*> mine;
    for (const Request& r : requests) {
      if (r.file == f) mine.push_back(&r);
    }
    AckedBefore acked(mine);
    std::map<int, std::vector<std::pair<int64_t, int64_t>>> by_client;  // client -> (invoke, seq)
    for (const Request* r : mine) {
      if (r->stored == 0) continue;
      // An unknown outcome may have been applied after its client gave up,
      // so only a request's start bounds it from below.
      const int64_t before = acked.MaxSeqBefore(r->invoke_us);
      if (before >= r->stored) {
        add("realtime", Quote(r->first().content) + " got " + Seq(r->stored) + ", but " + Seq(before) +
                            " was acknowledged before it was sent");
      }
      if (r->outcome == Outcome::kOk) by_client[r->first().client].emplace_back(r->invoke_us, r->stored);
    }
    for (auto& [client, list] : by_client) {
      std::sort(list.begin(), list.end());
      for (size_t i = 1; i < list.size(); ++i) {
        if (list[i].second < list[i - 1].second) {
          add("client-order", "client " + std::to_string(client) + "'s append stored at " + Seq(list[i].second) +
                                  " was sent after its append at " + Seq(list[i - 1].second));
        }
      }
    }
    if (f >= records.reads_by_file.size()) continue;
    for (const ReadRecord* r : records.reads_by_file[f]) {
      if (r->status != 200 || r->limit == 0) continue;  // Probes: checked above.
      ++counts->reads;
      const std::string at = "a read at " + std::to_string(r->invoke_us) + "us";
      if (r->messages.size() > h.size()) {
        add("reads", at + " returned " + std::to_string(r->messages.size()) + " messages; the final history has " +
                         std::to_string(h.size()));
        continue;
      }
      bool prefix = true;
      for (size_t i = 0; i < r->messages.size() && prefix; ++i) {
        if (r->messages[i].first != h[i].seq || r->messages[i].second != MessageHash(h[i].role, h[i].content)) {
          add("reads", at + " is not a prefix of the final history (differs at " + Seq(i + 1) + ")");
          prefix = false;
        }
      }
      // A page that is not full must hold every append acknowledged before it began.
      const int64_t must_see = acked.MaxSeqBefore(r->invoke_us);
      const bool whole = static_cast<int>(r->messages.size()) < r->limit;
      if (prefix && whole && must_see > static_cast<int64_t>(r->messages.size())) {
        add("reads", at + " returned " + std::to_string(r->messages.size()) + " messages but " + Seq(must_see) +
                         " was acknowledged before it began (stale read)");
      }
    }
  }
  return out;
}

std::vector<Violation> CheckCreates(const std::vector<const CreateRecord*>& creates) {
  std::vector<Violation> out;
  struct Keyed {
    std::string id;
    int fresh = 0;  // 2xx answers that were not replays.
  };
  std::map<std::string, Keyed> by_key;
  for (const CreateRecord* c : creates) {
    if (!c->key.empty() && c->status == 422) {
      // The load sends a key with one body only: a retry refused as another request.
      out.push_back({"create-key", "a retry of key " + Quote(c->key) + " with its own body was answered 422"});
    }
    if (c->key.empty() || c->status < 200 || c->status >= 300) continue;
    Keyed& k = by_key[c->key];
    if (!k.id.empty() && k.id != c->id) {
      out.push_back({"create-key", "key " + Quote(c->key) + " created both " + k.id + " and " + c->id});
    }
    k.id = c->id;
    if (!c->replayed && ++k.fresh == 2) {
      out.push_back({"create-key", "key " + Quote(c->key) +
                                       " was answered 201 without Idempotent-Replayed twice: "
                                       "session " +
                                       c->id + " was created a second time"});
    }
  }
  return out;
}

}  // namespace chatllm::load
