// Resharding through the real stack: an app instance holding a stale shard
// map cannot write to a moved session's old shard; the shard itself refuses.

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include "base/ids.h"
#include "shard_router/router.h"
#include "store/cluster_map.h"
#include "support/api_client.h"
#include "support/fcgi_client.h"
#include "support/instance.h"
#include "support/stack_env.h"

namespace chatllm::testing {
namespace {

// The app instances' logs, from where they ended when this was made. A
// worker logs "<pid> shard map: epoch A -> B" each time its map changes.
class MapLoads {
 public:
  MapLoads() {
    for (const auto& [name, port] : StackEnv::Get().apps()) {
      const std::string path = StackEnv::Get().var() + "/logs/" + name + ".log";
      std::ifstream in(path, std::ios::ate);
      from_[name] = {path, in ? static_cast<std::streamoff>(in.tellg()) : 0};
    }
  }
  // Whether every live worker of every app has loaded the map of `epoch` (or
  // a newer one) since. The stack runs one thread per worker: a worker's pid
  // names its only map.
  bool EveryWorkerHas(uint64_t epoch) const {
    for (const auto& [name, log] : from_) {
      std::map<pid_t, uint64_t> newest;
      std::ifstream in(log.first);
      in.seekg(log.second);
      for (std::string line; std::getline(in, line);) {
        const size_t at = line.find(" shard map: epoch ");
        const size_t arrow = line.find(" -> ", at);
        if (at == std::string::npos || arrow == std::string::npos) continue;
        const pid_t pid = std::atoi(line.c_str() + line.rfind(' ', at - 1) + 1);
        newest[pid] = std::max<uint64_t>(newest[pid], std::stoull(line.substr(arrow + 4)));
      }
      const std::vector<pid_t> workers = ChildPids(StackEnv::Get().AppMasterPid(name));
      if (workers.empty()) return false;
      for (pid_t w : workers) {
        if (newest[w] < epoch) return false;
      }
    }
    return true;
  }

 private:
  std::map<std::string, std::pair<std::string, std::streamoff>> from_;  // App -> log, offset.
};

class ReshardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const StackEnv& env = StackEnv::Get();
    config_ = env.AppConfig(env.apps()[0].first);
    std::istringstream spare(env.Value("CHATLLM_SPARE_SHARDS"));
    std::string item;
    spare >> item;
    spare_ = item.substr(0, item.find(':'));
    spare_port_ = std::stoi(item.substr(item.find(':') + 1));
    ASSERT_EQ(env.Stack("start-db " + spare_), 0);
  }
  void TearDown() override {
    // Back to the seed shards, whatever happened.
    Shardctl("rebalance");
    Shardctl("drain " + spare_);
    Shardctl("remove-shard " + spare_);
    StackEnv::Get().Stack("stop-db " + spare_);
  }

  int Shardctl(const std::string& args, std::string* out = nullptr, const std::string& env = "") {
    if (out) out->clear();
    return RunCommand(env + " " + StackEnv::Get().build() + "/shardctl --config " + config_ + " " + args + " 2>&1",
                      out);
  }
  std::shared_ptr<const ClusterMap> CurrentMap() {
    std::string json;
    EXPECT_EQ(Shardctl("map", &json), 0) << json;
    auto map = ClusterMap::FromJson(json.substr(0, json.find('\n')));
    EXPECT_TRUE(map.ok()) << map.status().message();
    return map.ok() ? *map : nullptr;
  }
  // The ring once the spare shard joins `map`'s shards.
  shard_router::Router RingWithSpare(const ClusterMap& map) {
    std::vector<shard_router::MapShard> shards;
    for (const auto& s : map.shards()) shards.push_back({s.name, s.weight, s.state});
    shards.push_back({spare_, 100, shard_router::ShardState::kActive});
    shard_router::Router ring;
    EXPECT_TRUE(shard_router::Router::Build(0, shards, &ring).ok());
    return ring;
  }
  // chatllm-admin on the stack; its exit status, stdout (trimmed) in `out`.
  int Admin(const std::string& args, std::string* out) {
    out->clear();
    const int rc = RunCommand(StackEnv::Get().build() + "/chatllm-admin --config " + config_ + " " + args, out);
    while (!out->empty() && (out->back() == '\n' || out->back() == ' ')) out->pop_back();
    return rc;
  }
  // `sql` as root on shard `name`; returns its output.
  std::string Sql(const std::string& name, const std::string& sql) {
    std::string out;
    RunCommand("mariadb --no-defaults -uroot -N --socket=" + StackEnv::Get().var() + "/db/" + name +
                   "/mariadb.sock chatllm -e \"" + sql + "\"",
               &out);
    return out;
  }
  static std::string Unhex(const std::string& hex) {
    std::string out;
    for (size_t i = 0; i + 1 < hex.size(); i += 2)
      out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    return out;
  }
  static std::string Hex(const std::string& uuid) {
    std::string h;
    for (char c : uuid) {
      if (c != '-') h.push_back(c);
    }
    return h;
  }

  std::string config_, spare_;
  int spare_port_ = 0;
};

TEST_F(ReshardTest, AppWithAStaleMapCannotWriteToAMovedSessionsOldShard) {
  ApiClient api(StackEnv::Get().url());
  auto before = CurrentMap();
  ASSERT_TRUE(before);
  ASSERT_FALSE(before->Find(spare_)) << "the spare shard is already in the map";

  // A session that adding the spare shard will move onto it.
  const shard_router::Router after_ring = RingWithSpare(*before);
  std::string id;
  for (int i = 0; i < 100 && id.empty(); ++i) {
    std::string candidate = api.CreateSession(R"({"model":"echo-moved","system_prompt":"moves with it"})");
    if (after_ring.Owner(candidate) == spare_) id = candidate;
  }
  ASSERT_FALSE(id.empty());
  const std::string old_shard = before->router().Owner(id);
  ASSERT_EQ(api.Append(id, "before the move").status, 201);
  const std::string meta_where = "SELECT meta FROM messages WHERE session_id = UNHEX('" + Hex(id) + "') AND seq = 1";
  const std::string meta_before = Sql(old_shard, meta_where);
  ASSERT_NE(meta_before.find("request_id"), std::string::npos) << meta_before;

  // The map as it is now, for the stale instance.
  const std::string map_file = StackEnv::Get().var() + "/stale-map.json";
  std::ofstream(map_file) << before->ToJson();

  std::string out;
  ASSERT_EQ(Shardctl("add-shard " + spare_ + " --host 127.0.0.1 --port " + std::to_string(spare_port_), &out), 0)
      << out;
  ASSERT_EQ(Shardctl("rebalance", &out), 0) << out;
  auto after = CurrentMap();
  ASSERT_GE(after->epoch(), before->epoch() + 2);
  EXPECT_EQ(Sql(old_shard, "SELECT state, moved_to FROM sessions WHERE session_id = UNHEX('" + Hex(id) + "')"),
            "moved\t" + spare_ + "\n");

  // The old shard itself refuses a write routed by the old map (fenced) and
  // one routed by the new map (the session moved away).
  // (chat_append_v5: session, role, content, at, reply_to, epoch, meta, user, max.)
  const std::string call = "SET @owner = (SELECT user_id FROM sessions WHERE session_id = UNHEX('" + Hex(id) +
                           "')); SELECT chat_append_v5(UNHEX('" + Hex(id) +
                           "'), 'user', 'sneaky', UTC_TIMESTAMP(6), 0, ";
  const std::string rest = ", '', @owner, 0)";
  EXPECT_EQ(Sql(old_shard, call + std::to_string(before->epoch()) + rest), "-3\n");
  EXPECT_EQ(Sql(old_shard, call + std::to_string(after->epoch()) + rest), "-2\n");

  // An app instance that starts with the stale map and would not refresh it
  // for an hour: its write lands on the new shard, never the old one.
  Instance stale("stale-map", StackEnv::Get().apps().back().second + 120,
                 {{"workers", "1"}, {"map_file", map_file}, {"map_refresh_ms", "3600000"}});
  stale.Start();
  FcgiResponse r =
      FcgiRequest(stale.port(), "POST", "/v1/sessions/" + id + "/messages", R"({"content":"after the move"})");
  ASSERT_EQ(r.status, 201) << r.body << "\n" << stale.log();
  EXPECT_EQ(r.headers["X-Shard-Map-Epoch"], std::to_string(after->epoch()));
  EXPECT_NE(stale.log().find("shard map: epoch " + std::to_string(before->epoch())), std::string::npos) << stale.log();

  EXPECT_EQ(Sql(old_shard, "SELECT COUNT(*) FROM messages WHERE session_id = UNHEX('" + Hex(id) + "')"), "0\n");
  EXPECT_EQ(Sql(spare_, "SELECT COUNT(*) FROM messages WHERE session_id = UNHEX('" + Hex(id) + "')"), "4\n");
  EXPECT_EQ(Sql(spare_, meta_where), meta_before) << "the move kept each message's request id";
  ApiResponse moved = api.Get("/v1/sessions/" + id);
  ASSERT_EQ(moved.status, 200) << moved.body;
  EXPECT_STREQ(moved["model"].GetString(), "echo-moved");
  EXPECT_STREQ(moved["system_prompt"].GetString(), "moves with it");
  std::vector<StoredMessage> history;
  ASSERT_TRUE(ReadHistory(api, id, &history));
  ASSERT_EQ(history.size(), 4u);
  EXPECT_EQ(history[0].content, "before the move");
  EXPECT_EQ(history[2].content, "after the move");
  EXPECT_EQ(CheckHistoryShape(history), "");
}

// Issue 12: sessions created with an Idempotency-Key, one turn each; a shard
// joins; every create is sent again with its key and body, before and after
// the rebalance. Before the fix a third of the retries answered 201 without
// Idempotent-Replayed, having made a second, empty copy of the session on its
// new owner; rebalance then took that copy for a finished move and deleted
// the original history.
TEST_F(ReshardTest, Issue12KeyedCreateRetriedDuringAJoinIsReplayedAndKeepsItsHistory) {
  ApiClient api(StackEnv::Get().url(), 30);
  struct Made {
    std::string key, body, response, id;
  };
  std::vector<Made> made;
  const std::string run =
      std::to_string(::getpid()) + "-" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  for (int i = 0; i < 30; ++i) {
    Made m;
    m.key = "create-" + run + "-" + std::to_string(i);
    m.body = "{\"title\":\"keyed " + std::to_string(i) + "\"}";
    api.set_headers({{"Idempotency-Key", m.key}});
    ApiResponse r = api.Post("/v1/sessions", m.body);
    ASSERT_EQ(r.status, 201) << r.body;
    m.response = r.body;
    m.id = r["id"].GetString();
    api.set_headers({});
    ASSERT_EQ(api.Append(m.id, "turn " + std::to_string(i)).status, 201);
    made.push_back(m);
  }
  auto retry_all = [&](const char* when) {
    SCOPED_TRACE(when);
    for (const Made& m : made) {
      api.set_headers({{"Idempotency-Key", m.key}});
      ApiResponse again = api.Post("/v1/sessions", m.body);
      api.set_headers({});
      EXPECT_EQ(again.status, 201) << again.body;
      EXPECT_EQ(again.Header("Idempotent-Replayed"), "true") << m.id;
      EXPECT_EQ(again.body, m.response);
      ApiResponse s = api.Get("/v1/sessions/" + m.id);
      ASSERT_EQ(s.status, 200) << s.body;
      EXPECT_EQ(s["message_count"].GetInt64(), 2) << m.id;
    }
  };
  std::string out;
  MapLoads loads;
  ASSERT_EQ(Shardctl("add-shard " + spare_ + " --host 127.0.0.1 --port " + std::to_string(spare_port_), &out), 0)
      << out;
  // Every app worker reads the new map before its first request after
  // map_refresh_ms (2000 on the test stack): reads drive them there, until
  // each has logged loading it, so that the retries are routed by it.
  const uint64_t joined = CurrentMap()->epoch();
  size_t k = 0;
  auto every_worker_has_it = [&] {
    for (int i = 0; i < 8; ++i) api.Get("/v1/sessions/" + made[k++ % made.size()].id);
    return loads.EveryWorkerHas(joined);
  };
  ASSERT_TRUE(WaitFor(20, every_worker_has_it)) << "some app worker never loaded the map of epoch " << joined;
  retry_all("during the join");
  Shardctl("verify", &out);
  EXPECT_EQ(out.find("active on"), std::string::npos) << out;
  ASSERT_EQ(Shardctl("rebalance", &out), 0) << out;
  retry_all("after the rebalance");
  for (size_t i = 0; i < made.size(); ++i) {
    std::vector<StoredMessage> history;
    ASSERT_TRUE(ReadHistory(api, made[i].id, &history));
    ASSERT_EQ(history.size(), 2u) << made[i].id;
    EXPECT_EQ(history[0].content, "turn " + std::to_string(i));
  }
  EXPECT_EQ(Shardctl("verify", &out), 0) << out;
}

// A move copies every column of a session's rows, whatever later migrations
// add: each row is compared whole (SELECT *) before and after. (A column the
// copy left out, the key's attempt token, made every keyed turn in flight
// during a move answer 409 until its lease ran out.)
TEST_F(ReshardTest, Issue12AMoveCopiesEveryColumn) {
  ApiClient api(StackEnv::Get().url(), 30);
  auto before = CurrentMap();
  ASSERT_TRUE(before);
  const shard_router::Router after_ring = RingWithSpare(*before);
  std::string id;
  for (int i = 0; i < 100 && id.empty(); ++i) {
    std::string candidate = api.CreateSession(R"({"title":"every column","model":"echo"})");
    if (after_ring.Owner(candidate) == spare_) id = candidate;
  }
  ASSERT_FALSE(id.empty());
  const std::string old_shard = before->router().Owner(id);
  const std::string path = "/v1/sessions/" + id + "/messages";
  api.set_headers({{"Idempotency-Key", "done-" + id}});
  ASSERT_EQ(api.Post(path, R"({"content":"answered"})").status, 201);
  api.set_headers({{"Idempotency-Key", "failed-" + id}});
  ASSERT_EQ(api.Post(path, R"({"content":"fails","model":"fake-status-500"})").status, 502);
  api.set_headers({});
  // A durable turn (issue 16): its row and its events move with it.
  ApiResponse streamed = api.Post(path, R"({"content":"streamed","stream":true,"model":"fake-drip-3-10"})");
  ASSERT_EQ(streamed.status, 200) << streamed.body;
  const std::string hex = Hex(id);
  // Rows with their column names, tab-separated, in a fixed order.
  auto rows = [&](const std::string& shard, const std::string& table, const std::string& order) {
    std::string out;
    RunCommand("mariadb --no-defaults -uroot --socket=" + StackEnv::Get().var() + "/db/" + shard +
                   "/mariadb.sock chatllm -e \"SELECT * FROM " + table + " WHERE session_id = UNHEX('" + hex +
                   "') ORDER BY " + order + "\"",
               &out);
    return out;
  };
  const std::string keys_before = rows(old_shard, "idempotency_keys", "idem_key");
  const std::string messages_before = rows(old_shard, "messages", "seq");
  const std::string session_before = rows(old_shard, "sessions", "session_id");
  ASSERT_NE(keys_before.find("failed"), std::string::npos) << keys_before;
  const std::string turns_before = rows(old_shard, "turns", "turn_id");
  const std::string events_before = rows(old_shard, "turn_events", "turn_id, seq");
  ASSERT_NE(turns_before.find("completed"), std::string::npos) << turns_before;
  ASSERT_NE(events_before.find("piece2"), std::string::npos) << events_before;
  std::string out;
  ASSERT_EQ(Shardctl("add-shard " + spare_ + " --host 127.0.0.1 --port " + std::to_string(spare_port_), &out), 0)
      << out;
  ASSERT_EQ(Shardctl("rebalance", &out), 0) << out;
  EXPECT_EQ(rows(spare_, "idempotency_keys", "idem_key"), keys_before);
  EXPECT_EQ(rows(spare_, "messages", "seq"), messages_before);
  EXPECT_EQ(rows(spare_, "turns", "turn_id"), turns_before);
  EXPECT_EQ(rows(spare_, "turn_events", "turn_id, seq"), events_before);
  EXPECT_EQ(rows(old_shard, "turn_events", "turn_id, seq"), "") << "the source keeps none";
  // And it is read again from its new shard.
  const std::string turn =
      Sql(spare_, "SELECT LPAD(LOWER(HEX(turn_id)), 16, '0') FROM turns WHERE session_id = UNHEX('" + hex + "')");
  ApiResponse events = api.Get(path.substr(0, path.size() - 9) + "/turns/" + turn.substr(0, 16) + "/events");
  EXPECT_EQ(events.status, 200) << events.body;
  EXPECT_NE(events.body.find("event: assistant"), std::string::npos) << events.body;
  // The session row: every column but those that say where it stands.
  auto without_placement = [](const std::string& table) {
    std::vector<std::vector<std::string>> cells;
    std::istringstream lines(table);
    for (std::string line; std::getline(lines, line);) {
      cells.emplace_back();
      std::istringstream fields(line);
      for (std::string f; std::getline(fields, f, '\t');) cells.back().push_back(f);
    }
    std::map<std::string, std::string> out;
    if (cells.size() != 2) return out;
    for (size_t c = 0; c < cells[0].size() && c < cells[1].size(); ++c) {
      const std::string& name = cells[0][c];
      if (name != "state" && name != "moved_to" && name != "moved_epoch" && name != "arrived_from")
        out[name] = cells[1][c];
    }
    return out;
  };
  const auto session_after = without_placement(rows(spare_, "sessions", "session_id"));
  EXPECT_EQ(session_after, without_placement(session_before));
  EXPECT_GE(session_after.size(), 10u) << "the session row was not read";
}

// Issue 12 review: a rebalance stops between activating a copy and
// tombstoning its source (a crash there); the session is deleted on its new
// shard. Before the fix, reads fell through to the frozen source (200 with
// the old history) and the rerun copied it back: the session came back.
TEST_F(ReshardTest, Issue12ASessionDeletedAfterAnInterruptedMoveStaysDeleted) {
  ApiClient api(StackEnv::Get().url(), 30);
  auto before = CurrentMap();
  ASSERT_TRUE(before);
  const shard_router::Router after_ring = RingWithSpare(*before);
  std::string id;
  for (int i = 0; i < 100 && id.empty(); ++i) {
    std::string candidate = api.CreateSession();
    if (after_ring.Owner(candidate) == spare_) id = candidate;
  }
  ASSERT_FALSE(id.empty());
  const std::string old_shard = before->router().Owner(id);
  ASSERT_EQ(api.Append(id, "before the move").status, 201);
  std::string out;
  ASSERT_EQ(Shardctl("add-shard " + spare_ + " --host 127.0.0.1 --port " + std::to_string(spare_port_), &out), 0)
      << out;
  EXPECT_NE(Shardctl("rebalance", &out, "CHATLLM_FAILPOINT=move-after-activate:" + id), 0);
  ASSERT_NE(out.find("failpoint"), std::string::npos) << out;
  const std::string where = "SELECT state FROM sessions WHERE session_id = UNHEX('" + Hex(id) + "')";
  ASSERT_EQ(Sql(spare_, where), "active\n");
  ASSERT_EQ(Sql(old_shard, where), "moving\n");

  ASSERT_EQ(api.Delete("/v1/sessions/" + id).status, 204);
  EXPECT_EQ(api.Get("/v1/sessions/" + id).status, 404) << "read the frozen copy of a deleted session";
  EXPECT_EQ(api.Get("/v1/sessions/" + id + "/messages").status, 404);
  EXPECT_EQ(api.Append(id, "after the delete").status, 404);
  ApiResponse list = api.Get("/v1/sessions?limit=200");
  ASSERT_EQ(list.status, 200);
  EXPECT_EQ(list.body.find(id), std::string::npos) << "a deleted session is listed";

  ASSERT_EQ(Shardctl("rebalance", &out), 0) << out;
  EXPECT_EQ(api.Get("/v1/sessions/" + id).status, 404) << "the rerun brought the session back";
  EXPECT_EQ(Sql(spare_, where), "");  // The tombstone only the move needed is gone too.
  EXPECT_NE(Sql(old_shard, where), "moving\n");
  EXPECT_EQ(Shardctl("verify", &out), 0) << out;
}

// Issue 15: sessions move in batches (frozen, copied, verified, activated
// and tombstoned together). Out to a new shard, a batch stopped after its
// activation (a crash there) and finished by a rerun, then back again by a
// drain, where every target holds the tombstone of the move away: every
// history reads the same throughout, keyed retries still replay, and verify
// passes.
TEST_F(ReshardTest, Issue15BatchesMoveOutStopMidwayAndComeBackWithEveryHistory) {
  ApiClient api(StackEnv::Get().url(), 30);
  std::vector<std::string> ids;
  std::map<std::string, std::string> histories;
  for (int i = 0; i < 40; ++i) {
    const std::string id = api.CreateSession(R"({"title":"batch )" + std::to_string(i) + R"("})");
    ASSERT_FALSE(id.empty());
    for (int m = 0; m < 1 + i % 3; ++m) ASSERT_EQ(api.Append(id, "yes").status, 201);
    api.set_headers({{"Idempotency-Key", "batch-" + id}});
    ASSERT_EQ(api.Post("/v1/sessions/" + id + "/messages", R"({"content":"keyed"})").status, 201);
    api.set_headers({});
    ids.push_back(id);
  }
  auto read_all = [&] {
    for (const std::string& id : ids) histories[id] = api.Get("/v1/sessions/" + id + "/messages?limit=200").body;
  };
  auto same = [&](const char* when) {
    for (const std::string& id : ids) {
      ApiResponse now = api.Get("/v1/sessions/" + id + "/messages?limit=200");
      EXPECT_EQ(now.status, 200) << when << ": " << id;
      EXPECT_EQ(now.body, histories[id]) << when << ": " << id;
      api.set_headers({{"Idempotency-Key", "batch-" + id}});
      ApiResponse replay = api.Post("/v1/sessions/" + id + "/messages", R"({"content":"keyed"})");
      api.set_headers({});
      EXPECT_EQ(replay.status, 201) << when << ": " << id;
      EXPECT_NE(replay.headers.find("Idempotent-Replayed"), replay.headers.end()) << when << ": " << id;
    }
  };
  read_all();
  auto before = CurrentMap();
  ASSERT_TRUE(before);
  const shard_router::Router after_ring = RingWithSpare(*before);
  std::string leaving;
  for (const std::string& id : ids) {
    if (after_ring.Owner(id) == spare_) leaving = id;
  }
  ASSERT_FALSE(leaving.empty()) << "none of 40 sessions goes to the new shard";

  std::string out;
  ASSERT_EQ(Shardctl("add-shard " + spare_ + " --host 127.0.0.1 --port " + std::to_string(spare_port_), &out), 0)
      << out;
  EXPECT_NE(Shardctl("rebalance --move-batch 50", &out, "CHATLLM_FAILPOINT=move-after-activate:" + leaving), 0);
  ASSERT_NE(out.find("failpoint"), std::string::npos) << out;
  same("after a batch stopped between activation and tombstones");
  ASSERT_EQ(Shardctl("rebalance --move-batch 50", &out), 0) << out;
  same("after the rerun");
  EXPECT_EQ(Shardctl("verify", &out), 0) << out;
  ASSERT_EQ(Shardctl("drain " + spare_, &out), 0) << out;
  same("after the drain");
  ASSERT_EQ(Shardctl("remove-shard " + spare_, &out), 0) << out;
  EXPECT_EQ(Shardctl("verify", &out), 0) << out;
  std::string in;
  for (const std::string& id : ids) in += std::string(in.empty() ? "" : ",") + "UNHEX('" + Hex(id) + "')";
  for (const auto& s : before->shards()) {
    // Back on their first shards: no tombstone of the move away is left.
    EXPECT_EQ(Sql(s.name, "SELECT COUNT(*) FROM sessions WHERE state <> 'active' AND session_id IN (" + in + ")"),
              "0\n")
        << s.name;
  }
}

// Issue 15 review: a batch's rows are written in INSERTs of a bounded size
// (about 2 MiB), not of a fixed row count, so that no INSERT nears
// max_allowed_packet. 300 keyed creates with 30,000-character system
// prompts of U+0001 (each key row keeps the 180 KB JSON answer) move in
// batches of up to 1000 and read back exactly.
TEST_F(ReshardTest, Issue15ABatchOfLargeRowsMovesInBoundedInserts) {
  ApiClient api(StackEnv::Get().url(), 30);
  std::string escaped;
  for (int i = 0; i < 30000; ++i) escaped += "\\u0001";
  std::vector<std::string> ids;
  for (int i = 0; i < 300; ++i) {
    api.set_headers({{"Idempotency-Key", "large-" + std::to_string(i) + "-" + std::to_string(::getpid())}});
    ApiResponse r = api.Post("/v1/sessions", R"({"system_prompt":")" + escaped + R"("})");
    ASSERT_EQ(r.status, 201) << r.body.substr(0, 200);
    const size_t at = r.body.find("\"id\":\"");
    ASSERT_NE(at, std::string::npos);
    ids.push_back(r.body.substr(at + 6, 36));
  }
  api.set_headers({});
  std::string out;
  ASSERT_EQ(Shardctl("add-shard " + spare_ + " --host 127.0.0.1 --port " + std::to_string(spare_port_), &out), 0)
      << out;
  ASSERT_EQ(Shardctl("rebalance --move-batch 1000", &out), 0) << out;
  EXPECT_EQ(Shardctl("verify", &out), 0) << out;
  int on_spare = 0;
  for (const std::string& id : ids) {
    ApiResponse r = api.Get("/v1/sessions/" + id);
    ASSERT_EQ(r.status, 200) << id;
    EXPECT_NE(r.body.find(escaped.substr(0, 600)), std::string::npos) << id;
    on_spare += Sql(spare_, "SELECT COUNT(*) FROM sessions WHERE state = 'active' AND session_id = UNHEX('" + Hex(id) +
                                "')") == "1\n";
  }
  EXPECT_GE(on_spare, 50);             // About 100 of 300 (standard deviation 8).
  for (int i = 0; i < 300; i += 30) {  // Their key rows moved with them: a retry is replayed.
    api.set_headers({{"Idempotency-Key", "large-" + std::to_string(i) + "-" + std::to_string(::getpid())}});
    ApiResponse r = api.Post("/v1/sessions", R"({"system_prompt":")" + escaped + R"("})");
    EXPECT_EQ(r.status, 201);
    EXPECT_NE(r.headers.find("Idempotent-Replayed"), r.headers.end()) << i;
    EXPECT_NE(r.body.find(ids[i]), std::string::npos) << i;
  }
  api.set_headers({});
}

// Issue 15: a shard joining never makes a valid key fail. Each key's row
// is a placement unit (its only authoritative copy), placed by the ring and
// moved by rebalance like a session. Keys exist before add-shard, which here
// stops right after publishing the map with the new shard joining; one
// more key is made while the shard joins (on its new owner at once), one
// was revoked before, one is revoked while the shard joins. Once every app
// worker routes by the new map, every key authenticates but the revoked
// ones; once the rebalance finishes the join, every key unit is on its
// owner, the revocations with them.
TEST_F(ReshardTest, Issue15KeysWorkWhileAShardJoins) {
  const std::string user = "joining-" + std::to_string(::getpid());
  std::string out;
  ASSERT_EQ(Admin("user add " + user, &out), 0) << out;
  std::vector<std::string> keys;
  for (int i = 0; i < 24; ++i) {
    ASSERT_EQ(Admin("key create " + user, &out), 0) << out;
    keys.push_back(out);
  }
  auto before = CurrentMap();
  ASSERT_TRUE(before && before->homes());
  const shard_router::Router after_ring = RingWithSpare(*before);
  auto unit_of = [](const std::string& key) { return SessionId::KeyUnitOf(Unhex(key.substr(3, 16))); };
  std::vector<std::string> moving;  // Keys whose unit the join moves to the spare shard.
  for (const std::string& key : keys) {
    if (after_ring.Owner(unit_of(key).text()) == spare_) moving.push_back(key);
  }
  ASSERT_GE(moving.size(), 2u) << "too few of 24 keys' units go to the joining shard";
  const std::string revoked = moving[0];
  ASSERT_EQ(Admin("key revoke " + revoked.substr(3, 16), &out), 0) << out;
  MapLoads loads;
  EXPECT_NE(Shardctl("add-shard " + spare_ + " --host 127.0.0.1 --port " + std::to_string(spare_port_), &out,
                     "CHATLLM_FAILPOINT=add-shard-after-publish:" + spare_),
            0);
  ASSERT_NE(out.find("failpoint"), std::string::npos) << out;
  ASSERT_EQ(Admin("key create " + user, &out), 0) << out;
  keys.push_back(out);
  const std::string revoked_now = moving[1];
  ASSERT_EQ(Admin("key revoke " + revoked_now.substr(3, 16), &out), 0) << out;

  const uint64_t joining = CurrentMap()->epoch();
  ApiClient probe(StackEnv::Get().url(), 30);
  ASSERT_TRUE(WaitFor(20,
                      [&] {
                        for (int i = 0; i < 8; ++i) probe.Get("/v1/sessions?limit=1");
                        return loads.EveryWorkerHas(joining);
                      }))
      << "some app worker never loaded the map of epoch " << joining;
  auto check = [&] {
    for (const std::string& key : keys) {
      ApiClient api(StackEnv::Get().url(), key, 30);
      for (int i = 0; i < 4; ++i) {  // Through both instances and several workers.
        ApiResponse r = api.Get("/v1/sessions?limit=1");
        EXPECT_EQ(r.status, key == revoked || key == revoked_now ? 401 : 200) << key.substr(0, 19);
      }
    }
  };
  check();
  ASSERT_EQ(Shardctl("rebalance", &out), 0) << out;
  for (const std::string& key : keys) {
    const std::string owner = after_ring.Owner(unit_of(key).text());
    EXPECT_EQ(Sql(owner,
                  "SELECT revoked_at IS NOT NULL FROM sessions WHERE kind = 'key' AND state = 'active' AND "
                  "session_id = UNHEX('" +
                      Hex(unit_of(key).text()) + "')"),
              key == revoked || key == revoked_now ? "1\n" : "0\n")
        << key.substr(0, 19) << " on " << owner;
  }
  check();
}

// Issue 15, the upgrade path: a deployment whose sessions were made by a
// release without homes. Until `shardctl rebalance` has listed them on
// their homes, the app lists every shard (and keeps the homes up to date);
// rebalance fills the homes and publishes the map that says so; the lists
// then come from the homes, complete, and verify finds nothing wrong.
TEST_F(ReshardTest, Issue15AnUpgradedDeploymentGetsItsHomesFromRebalance) {
  const StackEnv& env = StackEnv::Get();
  std::string user = "upgrade-" + std::to_string(::getpid()), key;
  ASSERT_EQ(Admin("user add " + user, &key), 0) << key;
  ASSERT_EQ(Admin("key create " + user, &key), 0) << key;
  ApiClient api(env.url(), key);
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) {
    ApiResponse r = api.Post("/v1/sessions", R"({"title":"old"})");
    ASSERT_EQ(r.status, 201) << r.body;
    ids.push_back(r["id"].GetString());
  }
  // What the older release left: no list entries, and a map without homes.
  auto map = CurrentMap();
  ASSERT_TRUE(map && map->homes());
  const std::string old_map =
      R"({"epoch":)" + std::to_string(map->epoch() + 1) + map->ToJson().substr(map->ToJson().find(R"(,"shards")"));
  std::string quoted;  // For the shell's double quotes around Sql's statement.
  for (char c : old_map) quoted += c == '"' ? std::string("\\\"") : std::string(1, c);
  for (const auto& shard : env.shards()) {
    Sql(shard.first,
        "DELETE l FROM session_list l JOIN sessions h ON h.session_id = l.home_id JOIN users u ON "
        "u.user_id = h.user_id WHERE u.name = '" +
            user + "'");
    Sql(shard.first,
        "UPDATE sessions h JOIN users u ON u.user_id = h.user_id SET h.listed = 0 WHERE h.kind = "
        "'home' AND u.name = '" +
            user + "'");
    Sql(shard.first, "INSERT INTO shard_map (epoch, map, created_at) VALUES (" + std::to_string(map->epoch() + 1) +
                         ", '" + quoted + "', UTC_TIMESTAMP(6))");
    Sql(shard.first, "UPDATE shard_fence SET epoch = " + std::to_string(map->epoch() + 1));
  }
  auto count = [&](const std::string& list) {
    size_t n = 0;
    for (size_t at = list.find(R"("id":")"); at != std::string::npos; at = list.find(R"("id":")", at + 1)) ++n;
    return n;
  };
  // The apps learn the older map (within map_refresh_ms) and list every shard.
  EXPECT_TRUE(WaitFor(10, [&] {
    ApiResponse r = api.Get("/v1/sessions?limit=100");
    return r.status == 200 && count(r.body) == 6;
  })) << api.Get("/v1/sessions?limit=100").body;
  // Meanwhile the app writes the homes: two new sessions, one old one gone.
  for (int i = 0; i < 2; ++i) {
    ApiResponse r = api.Post("/v1/sessions", R"({"title":"new"})");
    ASSERT_EQ(r.status, 201) << r.body;
    ids.push_back(r["id"].GetString());
  }
  ASSERT_EQ(api.Delete("/v1/sessions/" + ids[0]).status, 204);
  ids.erase(ids.begin());

  std::string out;
  ASSERT_EQ(Shardctl("rebalance", &out), 0) << out;
  EXPECT_NE(out.find("lists, the session limit and key lookups are served from the homes and units"), std::string::npos)
      << out;
  map = CurrentMap();
  ASSERT_TRUE(map && map->homes());
  ApiResponse list;
  EXPECT_TRUE(WaitFor(10, [&] {
    list = api.Get("/v1/sessions?limit=100");
    return list.status == 200 && count(list.body) == ids.size() &&
           list.Header("x-shard-map-epoch") == std::to_string(map->epoch());
  })) << list.body;
  for (const std::string& id : ids) EXPECT_NE(list.body.find(id), std::string::npos) << id;
  for (const auto& shard : env.shards()) {
    EXPECT_EQ(Sql(shard.first,
                  "SELECT COUNT(*) FROM session_list l JOIN sessions h ON h.session_id = l.home_id "
                  "JOIN users u ON u.user_id = h.user_id WHERE l.state <> 'live' AND u.name = '" +
                      user + "'"),
              "0\n")
        << shard.first;
  }
  ASSERT_EQ(Shardctl("verify", &out), 0) << out;
  EXPECT_NE(out.find(", 0 problems"), std::string::npos) << out;
  // A second rebalance has nothing to do.
  ASSERT_EQ(Shardctl("rebalance", &out), 0) << out;
  EXPECT_EQ(out.find("published"), std::string::npos) << out;

  // What an older binary serving after the flag would leave: a session
  // missing from its list, and a live entry of a session that does not
  // exist. verify names both; relist repairs them (the phantom once an app
  // reads it).
  const std::string missing = ids.back(), phantom = "0190a1b2-c3d4-4e5f-8a9b-0c1d2e3f4a5b";
  for (const auto& shard : env.shards()) {
    Sql(shard.first, "DELETE FROM session_list WHERE session_id = UNHEX('" + Hex(missing) + "')");
    Sql(shard.first,
        "INSERT INTO session_list (home_id, session_id, created_at, state, changed_at, metadata) "
        "SELECT session_id, UNHEX('" +
            Hex(phantom) +
            "'), UTC_TIMESTAMP(6), 'live', UTC_TIMESTAMP(6), "
            "'{}' FROM sessions WHERE kind = 'home' AND user_id = (SELECT user_id FROM users WHERE name = '" +
            user + "')");
  }
  EXPECT_NE(Shardctl("verify", &out), 0) << out;
  EXPECT_NE(out.find("sessions are missing from their user's list"), std::string::npos) << out;
  EXPECT_NE(out.find("list entries name a session that does not exist"), std::string::npos) << out;
  ASSERT_EQ(Shardctl("relist", &out), 0) << out;
  EXPECT_NE(out.find("relist: "), std::string::npos) << out;
  EXPECT_TRUE(WaitFor(10, [&] {
    list = api.Get("/v1/sessions?limit=100");
    return list.status == 200 && count(list.body) == ids.size() && list.body.find(phantom) == std::string::npos;
  })) << list.body;
  EXPECT_NE(list.body.find(missing), std::string::npos) << list.body;
  ASSERT_EQ(Shardctl("verify", &out), 0) << out;
}

}  // namespace
}  // namespace chatllm::testing
