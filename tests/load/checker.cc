#include "load/checker.h"

#include <algorithm>
#include <set>

namespace chatllm::load {
namespace {

std::string Quote(const std::string& s) { return "'" + s.substr(0, 80) + "'"; }

// Acknowledged appends of one file ordered by completion, with the running
// maximum of their stored seq: "the highest seq acknowledged before time t".
class AckedBefore {
 public:
  AckedBefore(const std::vector<const AppendRecord*>& appends,
              const std::map<std::string, std::vector<int64_t>>& stored) {
    for (const AppendRecord* a : appends) {
      auto it = stored.find(a->content);
      if (a->outcome == Outcome::kOk && it != stored.end() && it->second.size() == 1) {
        done_.emplace_back(a->complete_us, it->second[0]);
      }
    }
    std::sort(done_.begin(), done_.end());
    for (size_t i = 0; i < done_.size(); ++i) done_[i].second = std::max(i ? done_[i - 1].second : 0, done_[i].second);
  }
  // Highest seq among appends acknowledged strictly before t, or 0.
  int64_t MaxSeqBefore(int64_t t) const {
    auto end = std::lower_bound(done_.begin(), done_.end(), std::make_pair(t, INT64_MIN));
    return end == done_.begin() ? 0 : (end - 1)->second;
  }

 private:
  std::vector<std::pair<int64_t, int64_t>> done_;  // (complete_us, running max seq)
};

}  // namespace

std::vector<Violation> CheckSession(const std::vector<StoredMessage>& h, const SessionRecords& records,
                                    bool echo, CheckCounts* counts) {
  std::vector<Violation> out;
  auto add = [&out](std::string kind, std::string detail) { out.push_back({std::move(kind), std::move(detail)}); };

  for (size_t i = 0; i < h.size(); ++i) {
    if (h[i].seq != static_cast<int64_t>(i + 1)) {
      add("dense", "position " + std::to_string(i + 1) + " holds seq " + std::to_string(h[i].seq));
      return out;  // Everything below indexes by seq.
    }
  }
  for (const StoredMessage& m : h) {
    if (m.role != "assistant") continue;
    int64_t r = m.reply_to;
    if (r < 1 || r >= m.seq || h[r - 1].role != "user") {
      add("dense", "assistant seq " + std::to_string(m.seq) + " replies to " + std::to_string(r));
    } else if (echo && h[r - 1].content != m.content) {
      add("dense", "assistant seq " + std::to_string(m.seq) + " does not repeat user seq " + std::to_string(r));
    }
  }

  std::map<std::string, std::vector<int64_t>> stored;  // user content -> seqs
  for (const StoredMessage& m : h) {
    if (m.role == "user") stored[m.content].push_back(m.seq);
  }
  std::set<std::string> sent;
  for (const auto& file : records.appends_by_file) {
    for (const AppendRecord* a : file) {
      sent.insert(a->content);
      auto it = stored.find(a->content);
      size_t n = it == stored.end() ? 0 : it->second.size();
      switch (a->outcome) {
        case Outcome::kOk:
          ++counts->acknowledged;
          if (n != 1) {
            add("acknowledged", Quote(a->content) + " (client " + std::to_string(a->client) + ", status " +
                                    std::to_string(a->status) + ") is stored " + std::to_string(n) + " times");
          } else if (a->seq != 0 && it->second[0] != a->seq) {
            add("acknowledged", Quote(a->content) + " was acknowledged as seq " + std::to_string(a->seq) +
                                    " but is stored at seq " + std::to_string(it->second[0]));
          }
          break;
        case Outcome::kFail:
          ++counts->refused;
          if (n != 0) add("refused", Quote(a->content) + " was refused (" + std::to_string(a->status) + ") but is stored");
          break;
        case Outcome::kUnknown:
          ++counts->unknown;
          if (n > 1) add("unknown", Quote(a->content) + " is stored " + std::to_string(n) + " times");
          if (n == 1) ++counts->unknown_stored;
          break;
      }
    }
  }
  for (const auto& [content, seqs] : stored) {
    if (!sent.count(content)) add("phantom", "seq " + std::to_string(seqs[0]) + " " + Quote(content) + " was never sent");
  }

  for (size_t f = 0; f < records.appends_by_file.size(); ++f) {
    const auto& appends = records.appends_by_file[f];
    AckedBefore acked(appends, stored);
    std::map<int, std::vector<std::pair<int64_t, int64_t>>> by_client;  // client -> (invoke, seq)
    for (const AppendRecord* b : appends) {
      auto it = stored.find(b->content);
      if (it == stored.end() || it->second.size() != 1) continue;
      int64_t seq = it->second[0];
      // An unknown outcome may have been applied after its client gave up,
      // so only an append's start bounds it from below.
      int64_t before = acked.MaxSeqBefore(b->invoke_us);
      if (before >= seq) {
        add("realtime", Quote(b->content) + " got seq " + std::to_string(seq) + ", but seq " +
                            std::to_string(before) + " was acknowledged before it was sent");
      }
      if (b->outcome == Outcome::kOk) by_client[b->client].emplace_back(b->invoke_us, seq);
    }
    for (auto& [client, list] : by_client) {
      std::sort(list.begin(), list.end());
      for (size_t i = 1; i < list.size(); ++i) {
        if (list[i].second < list[i - 1].second) {
          add("client-order", "client " + std::to_string(client) + "'s append stored at seq " +
                                  std::to_string(list[i].second) + " was sent after its append at seq " +
                                  std::to_string(list[i - 1].second));
        }
      }
    }
    if (f >= records.reads_by_file.size()) continue;
    for (const ReadRecord* r : records.reads_by_file[f]) {
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
          add("reads", at + " is not a prefix of the final history (differs at seq " + std::to_string(i + 1) + ")");
          prefix = false;
        }
      }
      // A page that is not full must hold every append acknowledged before it began.
      int64_t must_see = acked.MaxSeqBefore(r->invoke_us);
      bool whole = static_cast<int>(r->messages.size()) < r->limit;
      if (prefix && whole && must_see > static_cast<int64_t>(r->messages.size())) {
        add("reads", at + " returned " + std::to_string(r->messages.size()) + " messages but seq " +
                         std::to_string(must_see) + " was acknowledged before it began (stale read)");
      }
    }
  }
  return out;
}

}  // namespace chatllm::load
