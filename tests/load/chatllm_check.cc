// chatllm-check: proves that the histories stored by chatllm agree with what
// the load generator's clients were told (Jepsen's list-append model, for
// one list per session). See --help for the properties checked.

#include <httplib.h>
#include <rapidjson/document.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "load/checker.h"
#include "load/history.h"
#include "load/load_options.h"
#include "store/cluster_map.h"

namespace chatllm::load {
namespace {

constexpr const char* kUsage = R"(usage: chatllm-check --url URL --history FILE [--history FILE...] [options]

Reads every session named in the history files back through the API and
checks, per session (appends that carried one Idempotency-Key are one
request; appends without a key are each their own, even with equal texts):
  dense         seq is exactly 1..n; each assistant message replies to an
                earlier user message (and, with --echo, repeats it, or a
                prefix of it when cut short)
  answer        no user message has two complete answers (a turn ran twice)
  acknowledged  every request answered 2xx is stored exactly once, at the seq
                it was acknowledged with (its answer too); no two requests
                were acknowledged at one seq
  refused       every request answered only 4xx is absent
  unknown       every request with no answer or a 5xx is stored at most once;
                a text sent by several requests is stored at most once per
                request that may have stored it
  duplicate     (records with X-Request-Ids) no request wrote two stored
                messages; each stored message was written by a request that
                sent its text
  key           the answers to one key agree on their seqs, and a retry with
                the same body is never refused as a different request
  phantom       every stored user message was sent by some client
  realtime      a request acknowledged before another was sent has the lower
                seq (within one history file: one clock)
  client-order  each client's acknowledged requests are stored in the order sent
  reads         every page read during the run is a prefix of the final
                history, and contains every append acknowledged before it began
  deleted       a session acknowledged as deleted stays gone: no write sent
                after that is acknowledged, no read finds it, no list names it
  lost          a session that answers 404 (at the end, to an append or a
                read) was deleted by some client before
  resume        a cut stream the client resumed from its last event to the
                end assembled exactly the answer stored at the seq it named
and over the run:
  create-key    creates with one key answer one session, made once
Options:
  --api-key KEY          API key (default $CHATLLM_API_KEY, else the contents of
                         $CHATLLM_API_KEY_FILE)
  --echo                 assistant replies must equal the user message (echo provider)
  --map FILE             the shard map (shardctl map), with --only-5xx-on-shard
  --only-5xx-on-shard S  fail if a session not on shard S got a 5xx or no answer
  --max-print N          print at most N violations (default 50)
Exits 0 when there is no violation, 1 otherwise, 2 on usage errors.
)";

// Reads a session's whole history through the API, retrying for a while
// (a shard may still be recovering from the fault).
class Reader {
 public:
  Reader(const std::string& url, const std::string& api_key) : http_(url) {
    if (!api_key.empty()) http_.set_default_headers({{"Authorization", "Bearer " + api_key}});
    http_.set_keep_alive(true);
    http_.set_tcp_nodelay(true);
    http_.set_read_timeout(30, 0);
  }

  enum class Result { kRead, kGone, kFailed };
  // kGone when the session answers 404 (at once: a 404 is never retried).
  Result Fetch(const std::string& session, std::vector<StoredMessage>* out) {
    for (int attempt = 0; attempt < 20; ++attempt) {
      if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(500));
      out->clear();
      int64_t after = 0;
      while (true) {
        auto r = http_.Get("/v1/sessions/" + session + "/messages?limit=200&after=" + std::to_string(after));
        if (r && r->status == 404 && after == 0) return Result::kGone;
        if (!r || r->status != 200) break;
        rapidjson::Document d;
        d.Parse(r->body.c_str(), r->body.size());
        for (const auto& m : d["data"].GetArray()) {
          auto text = [&m](const char* name) {
            return m.HasMember(name) && m[name].IsString() ? std::string(m[name].GetString()) : std::string();
          };
          out->push_back(StoredMessage{m["seq"].GetInt64(), m["role"].GetString(),
                                       std::string(m["content"].GetString(), m["content"].GetStringLength()),
                                       m.HasMember("reply_to") ? m["reply_to"].GetInt64() : 0, text("provider"),
                                       text("finish_reason"), text("request_id")});
        }
        if (!d["has_more"].GetBool()) return Result::kRead;
        after = d["next_after"].GetInt64();
      }
    }
    return Result::kFailed;
  }

 private:
  httplib::Client http_;
};

int Main(int argc, char** argv) {
  std::string url = "http://127.0.0.1:8080", map_path, only_shard, api_key = ApiKeyFromEnvironment();
  std::vector<std::string> files;
  bool echo = false;
  int max_print = 50;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "chatllm-check: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--url")
      url = next();
    else if (a == "--api-key")
      api_key = next();
    else if (a == "--history")
      files.push_back(next());
    else if (a == "--echo")
      echo = true;
    else if (a == "--map")
      map_path = next();
    else if (a == "--only-5xx-on-shard")
      only_shard = next();
    else if (a == "--max-print")
      max_print = std::atoi(next().c_str());
    else {
      std::fprintf(stderr, "chatllm-check: unknown option '%s'\n\n%s", a.c_str(), kUsage);
      return 2;
    }
  }
  if (files.empty() || (!only_shard.empty() && map_path.empty())) {
    std::fputs(kUsage, stderr);
    return 2;
  }

  std::vector<History> histories(files.size());
  for (size_t f = 0; f < files.size(); ++f) {
    std::string error;
    if (!LoadHistory(files[f], &histories[f], &error)) {
      std::fprintf(stderr, "chatllm-check: %s\n", error.c_str());
      return 2;
    }
  }

  std::shared_ptr<const ClusterMap> map;
  if (!only_shard.empty()) {
    std::ifstream in(map_path);
    std::stringstream text;
    text << in.rdbuf();
    auto parsed = ClusterMap::FromJson(text.str());
    if (!in || !parsed.ok()) {
      std::fprintf(stderr, "chatllm-check: %s: %s\n", map_path.c_str(),
                   in ? parsed.status().message().c_str() : "cannot read");
      return 2;
    }
    map = *parsed;
  }

  std::map<std::string, SessionRecords> sessions;
  auto records = [&](const std::string& s) -> SessionRecords& {
    SessionRecords& r = sessions[s];
    r.appends_by_file.resize(histories.size());
    r.reads_by_file.resize(histories.size());
    r.deletes_by_file.resize(histories.size());
    r.lists_by_file.resize(histories.size());
    return r;
  };
  int64_t violations = 0;
  std::map<std::string, int64_t> by_kind;
  auto report = [&](const std::string& session, const Violation& v) {
    ++violations;
    ++by_kind[v.kind];
    if (violations <= max_print) {
      std::printf("VIOLATION %-12s session %s: %s\n", v.kind.c_str(), session.c_str(), v.detail.c_str());
    }
  };
  for (size_t f = 0; f < histories.size(); ++f) {
    for (const auto& s : histories[f].sessions) records(s);
    for (const auto& a : histories[f].appends) {
      records(a.session).appends_by_file[f].push_back(&a);
      if (map && !a.cut && (a.status == 0 || a.status >= 500) && map->router().Owner(a.session) != only_shard) {
        report(a.session, {"blast-radius", "status " + std::to_string(a.status) + " on shard " +
                                               map->router().Owner(a.session) + ", which the fault did not touch"});
      }
    }
    for (const auto& r : histories[f].reads) records(r.session).reads_by_file[f].push_back(&r);
    for (const auto& d : histories[f].deletes) records(d.session).deletes_by_file[f].push_back(&d);
    for (const auto& l : histories[f].lists) {
      for (const std::string& id : l.ids) {
        // Only sessions this run knows: a list also names others of the user.
        if (sessions.count(id)) records(id).lists_by_file[f].push_back(&l);
      }
    }
  }
  std::vector<const CreateRecord*> creates;
  for (const History& h : histories) {
    for (const CreateRecord& c : h.creates) {
      creates.push_back(&c);
      if (c.status >= 200 && c.status < 300) records(c.id);  // Every created session is read back.
    }
  }
  for (const Violation& v : CheckCreates(creates)) report("(creates)", v);

  Reader reader(url, api_key);
  CheckCounts counts;
  int64_t messages = 0;
  for (const auto& [session, recs] : sessions) {
    std::vector<StoredMessage> history;
    const Reader::Result read = reader.Fetch(session, &history);
    if (read == Reader::Result::kFailed) {
      report(session, {"unreadable", "GET messages kept failing for 10 s"});
      continue;
    }
    messages += static_cast<int64_t>(history.size());
    for (const Violation& v : CheckSession(history, read == Reader::Result::kGone, recs, echo, &counts)) {
      report(session, v);
    }
  }
  std::printf(
      "chatllm-check: %zu sessions (%lld deleted), %lld messages; appends: %lld acknowledged, %lld refused, "
      "%lld unknown (%lld of them stored), %lld with a key, %lld with a text another also sent; "
      "%zu creates; %lld reads checked; %lld resumed streams checked; %lld violations\n",
      sessions.size(), static_cast<long long>(counts.deleted), static_cast<long long>(messages),
      static_cast<long long>(counts.acknowledged), static_cast<long long>(counts.refused),
      static_cast<long long>(counts.unknown), static_cast<long long>(counts.unknown_stored),
      static_cast<long long>(counts.keyed), static_cast<long long>(counts.shared), creates.size(),
      static_cast<long long>(counts.reads), static_cast<long long>(counts.resumed), static_cast<long long>(violations));
  for (const auto& [kind, n] : by_kind) std::printf("  %s: %lld\n", kind.c_str(), static_cast<long long>(n));
  return violations == 0 ? 0 : 1;
}

}  // namespace
}  // namespace chatllm::load

int main(int argc, char** argv) { return chatllm::load::Main(argc, argv); }
