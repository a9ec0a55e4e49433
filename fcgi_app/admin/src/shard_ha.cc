// Shard high availability (shardctl status --members, switchover, failover,
// rejoin, monitor): the replication statements, and the order they run in
// that keeps a shard to one primary. docs/architecture.md, "Shard high
// availability", explains the design; docs/operations.md the commands.
//
// CHANGE MASTER TO cannot take bound parameters: what goes into them is the
// map's host and port (validated: digits, letters, '.', '-', ':'), the
// configured replication account (escaped with mysql_real_escape_string)
// and GTID positions read from the servers (validated: digits, '-', ',').

#include "admin/shard_ha.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <thread>

#include "base/log.h"
#include "base/time_util.h"
#include "shard_ha_conn.h"
#include "store/connection.h"

extern char** environ;

namespace chatllm {

using namespace ha_detail;

ShardHa::ShardHa(const Config& config, ClusterAdmin& admin) : config_(config), admin_(admin) {}
ShardHa::~ShardHa() = default;

std::unique_ptr<ShardHa::Conn> ShardHa::Connect(const ShardEntry& shard, const DbMember& m, int timeout_s,
                                                int read_timeout_s) {
  if (!SafeHost(m.host)) throw AdminError("shard " + shard.name + ": member host '" + m.host + "' is not a host name");
  DbOptions options;
  options.connect_timeout_s = timeout_s;
  // Longer than any wait a statement on it does (MASTER_GTID_WAIT).
  options.read_timeout_s = std::max({timeout_s, 2, read_timeout_s});
  options.write_timeout_s = options.read_timeout_s;
  options.statement_timeout_s = 0;
  options.down_backoff_ms = 0;
  return std::make_unique<Conn>(
      DbEndpoint{shard.name, m.host, m.port, shard.database, config_.ha_user, config_.ha_password}, options);
}

MemberReport ShardHa::Report(const ShardEntry& shard, const DbMember& m, const std::string& role) {
  MemberReport r;
  r.member = m;
  r.role = role;
  try {
    auto conn = Connect(shard, m, 1);
    auto vars = conn->Row(
        "SELECT @@global.read_only AS ro, @@global.gtid_binlog_pos AS pos, "
        "@@global.rpl_semi_sync_master_enabled AS semi");
    r.read_only = vars["ro"] != "0";
    r.gtid_binlog_pos = vars["pos"];
    r.semi_sync = vars["semi"] == "1";
    auto clients = conn->Row("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_clients'");
    r.semi_sync_clients = std::atoll(clients["Value"].c_str());
    r.reachable = true;
    auto slave = conn->Row("SHOW SLAVE STATUS");
    if (!slave.empty()) {
      r.source = slave["Master_Host"] + ":" + slave["Master_Port"];
      r.io_running = slave["Slave_IO_Running"] == "Yes";
      r.sql_running = slave["Slave_SQL_Running"] == "Yes";
      r.lag_s = slave["Seconds_Behind_Master"].empty() ? -1 : std::atoll(slave["Seconds_Behind_Master"].c_str());
      r.gtid_io_pos = slave["Gtid_IO_Pos"];
      if (!slave["Last_IO_Error"].empty()) r.error = "replication: " + slave["Last_IO_Error"];
      if (!slave["Last_SQL_Error"].empty()) r.error = "replication: " + slave["Last_SQL_Error"];
    }
  } catch (const DbError& e) {
    r.error = "unreachable";
  } catch (const MysqlError& e) {
    // Connected but not answering (a lost connection under load, a
    // statement refused): not known to be up, and not known to be
    // read-only; the monitor treats it as unreachable.
    r.reachable = false;
    r.error = e.what();
  }
  return r;
}

std::vector<ShardHaReport> ShardHa::Status(const ClusterMap& map) {
  std::vector<ShardHaReport> out(map.shards().size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < map.shards().size(); ++i) {
    threads.emplace_back([&, i] {
      const ShardEntry& e = map.shards()[i];
      out[i].shard = e.name;
      out[i].promoted_at = e.promoted_at;
      out[i].members.push_back(Report(e, e.primary(), "primary"));
      for (const DbMember& r : e.replicas) out[i].members.push_back(Report(e, r, "replica"));
    });
  }
  for (std::thread& t : threads) t.join();
  return out;
}

void ShardHa::ReplicateFrom(Conn& replica, const DbMember& primary, bool from_current_pos) {
  if (!SafeHost(primary.host)) throw AdminError("primary host '" + primary.host + "' is not a host name");
  replica.Exec("STOP SLAVE");
  // The replica must never take writes of its own: read-only before it
  // follows anyone.
  replica.Exec("SET GLOBAL read_only = ON");
  // Its applier's commits must not wait for replicas of its own.
  replica.Exec("SET GLOBAL rpl_semi_sync_master_enabled = OFF");
  // A replica's own commits need not reach its disk one by one: what it
  // acknowledges is the relay log write (as semi-sync always does), and what
  // a crash of it loses it fetches again from its primary by GTID. Its
  // fsyncs would compete with the primary's (measured: tests/load/ha_bench).
  // Promote() restores both before it takes writes.
  replica.Exec("SET GLOBAL sync_binlog = 0");
  replica.Exec("SET GLOBAL innodb_flush_log_at_trx_commit = 2");
  replica.Exec("SET GLOBAL rpl_semi_sync_slave_enabled = ON");
  // CHANGE MASTER takes literals only (no parameter markers): the host is
  // checked as a host name above, the port is a number, and the
  // replication user and password are escaped by the server's own rules.
  replica.Exec("CHANGE MASTER TO MASTER_HOST = '" + primary.host + "', MASTER_PORT = " + std::to_string(primary.port) +
               ", MASTER_USER = '" + replica.Escape(config_.repl_user) + "', MASTER_PASSWORD = '" +
               replica.Escape(config_.repl_password) + "', MASTER_CONNECT_RETRY = 1, MASTER_HEARTBEAT_PERIOD = 1, " +
               (from_current_pos ? "MASTER_USE_GTID = current_pos" : "MASTER_USE_GTID = slave_pos"));
  replica.Exec("START SLAVE");
}

bool ShardHa::WaitApplied(Conn& replica, const std::string& gtid, int timeout_ms) {
  if (gtid.empty()) return true;
  if (!SafeGtid(gtid)) throw AdminError("unexpected GTID position '" + gtid + "'");
  MysqlStatement wait(replica.Handle(), "SELECT MASTER_GTID_WAIT(?, ?)");
  wait.BindString(0, gtid);
  wait.BindInt64(1, std::max(1, timeout_ms / 1000));
  wait.Execute();
  return wait.row_count() == 1 && !wait.IsNull(0, 0) && wait.Int64(0, 0) == 0;
}

void ShardHa::RunsAlone(Conn& conn) {
  // Flushed before waiting stops, so that no commit it acknowledges alone
  // is missing from InnoDB's log: with the binary log on, 1 does not flush
  // a commit's own InnoDB record (the binary log recovers it), and the
  // init_rpl_role=SLAVE recovery rolls back what InnoDB holds only as
  // prepared. Every primary runs 3, with a replica too (set by Promote, kept
  // by rejoin): a replica's acknowledgement covers only its relay log, which
  // its own crash recovery may discard, and a map that lists no replica
  // (a rejoin or degrade cut short) would have the primary reopened.
  conn.Exec("SET GLOBAL innodb_flush_log_at_trx_commit = 3");
  conn.Exec("SET GLOBAL rpl_semi_sync_master_enabled = OFF");
}

void ShardHa::Promote(Conn& conn, bool semi_sync) {
  conn.Exec("STOP SLAVE");
  conn.Exec("RESET SLAVE ALL");
  // With a replica to wait for, commits wait for its acknowledgement
  // without a timeout; without one (the only other member was the dead
  // primary), the shard runs alone until a rejoin gives it a replica again
  // (docs/architecture.md: durability while degraded).
  // Every commit it acknowledges is on its disk first (a replica ran
  // without: ReplicateFrom).
  conn.Exec("SET GLOBAL sync_binlog = 1");
  if (semi_sync) {
    conn.Exec("SET GLOBAL innodb_flush_log_at_trx_commit = 3");
    conn.Exec("SET GLOBAL rpl_semi_sync_master_enabled = ON");
  } else {
    RunsAlone(conn);
  }
  conn.Exec("SET GLOBAL read_only = OFF");
}

std::shared_ptr<const ClusterMap> ShardHa::PublishPrimary(const ClusterMap& map, const std::string& shard,
                                                          const DbMember& primary, std::vector<DbMember> replicas) {
  std::vector<ShardEntry> shards = map.shards();
  for (ShardEntry& s : shards) {
    if (s.name != shard) continue;
    s.host = primary.host;
    s.port = primary.port;
    s.replicas = std::move(replicas);
    s.promoted_at = NowSeconds();
  }
  auto next = ClusterMap::Build(map.epoch() + 1, std::move(shards), map.homes_state());
  if (!next.ok()) throw AdminError("the new map would be invalid: " + next.status().message());
  admin_.PublishWhereReachable(**next, shard);
  return *next;
}

void ShardHa::RunHook(const std::string& event, const std::string& shard, const std::string& detail) {
  LOG_INFO("ha: %s: shard %s: %s", event.c_str(), shard.c_str(), detail.c_str());
  if (config_.ha_hook.empty()) return;
  // Everything the child needs is built before fork: only async-signal-safe
  // calls after it (the monitor has threads).
  std::vector<std::string> env_text;
  for (char** e = environ; e && *e; ++e) env_text.emplace_back(*e);
  env_text.push_back("CHATLLM_HA_EVENT=" + event);
  env_text.push_back("CHATLLM_HA_SHARD=" + shard);
  env_text.push_back("CHATLLM_HA_DETAIL=" + detail);
  std::vector<char*> envp;
  for (std::string& v : env_text) envp.push_back(v.data());
  envp.push_back(nullptr);
  std::string path = config_.ha_hook, ev = event, sh = shard;
  char* argv[] = {path.data(), ev.data(), sh.data(), nullptr};
  const pid_t pid = fork();
  if (pid == 0) {
    ::execve(path.c_str(), argv, envp.data());
    ::_exit(127);
  }
  if (pid > 0) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      LOG_WARN("ha: hook %s failed for %s on shard %s", config_.ha_hook.c_str(), event.c_str(), shard.c_str());
    }
  }
}

void ShardHa::Bootstrap(const ClusterMap& map) {
  for (const ShardEntry& e : map.shards()) {
    auto primary = Connect(e, e.primary(), 10);
    auto pv = primary->Row("SELECT @@global.read_only AS ro");
    for (const DbMember& r : e.replicas) {
      auto replica = Connect(e, r, 10);
      auto rv = replica->Row("SELECT @@global.read_only AS ro");
      if (rv["ro"] == "0") {
        throw AdminError("shard " + e.name + ": replica " + MemberText(r) +
                         " is writable: it may have been promoted; use 'shardctl failover' or 'rejoin', not bootstrap");
      }
      auto slave = replica->Row("SHOW SLAVE STATUS");
      const std::string want = e.host + ":" + std::to_string(e.port);
      if (!slave.empty() && slave["Master_Host"] + ":" + slave["Master_Port"] == want &&
          slave["Slave_IO_Running"] != "No") {
        continue;  // Already following its primary.
      }
      if (!slave.empty() && !slave["Master_Host"].empty() &&
          slave["Master_Host"] + ":" + slave["Master_Port"] != want) {
        throw AdminError("shard " + e.name + ": replica " + MemberText(r) + " replicates from " + slave["Master_Host"] +
                         ":" + slave["Master_Port"] + ", not the map's primary");
      }
      ReplicateFrom(*replica, e.primary(), false);
    }
    if (pv["ro"] != "0") Promote(*primary, !e.replicas.empty());
  }
}

std::shared_ptr<const ClusterMap> ShardHa::Switchover(const std::string& shard, const std::optional<DbMember>& to) {
  auto map = admin_.LoadMap();
  const ShardEntry* e = map->Find(shard);
  if (!e) throw AdminError("no shard named " + shard + " in map epoch " + std::to_string(map->epoch()));
  if (e->replicas.empty()) throw AdminError("shard " + shard + " has no replica to switch to");
  // The target: the one asked for, else the replica furthest ahead.
  std::optional<MemberReport> target;
  for (const DbMember& r : e->replicas) {
    if (to && !(r == *to)) continue;
    MemberReport rep = Report(*e, r, "replica");
    if (!rep.reachable || !rep.io_running || !rep.sql_running) continue;
    if (!target || GtidSeq(rep.gtid_io_pos) > GtidSeq(target->gtid_io_pos)) target = rep;
  }
  if (!target) {
    throw AdminError("shard " + shard + ": " +
                     (to ? MemberText(*to) + " is not a replica of it that replicates now"
                         : std::string("no replica replicates now")));
  }
  const int64_t start = MonotonicMicros();
  const int wait_s = config_.ha_catchup_timeout_ms / 1000 + 10;
  // The failover lock on every replica: a monitor that sees the primary
  // read-only while this runs must not fail it over meanwhile.
  std::vector<std::unique_ptr<Conn>> locks;
  for (const DbMember& r : e->replicas) {
    try {
      auto conn = Connect(*e, r, 5);
      if (conn->Row("SELECT COALESCE(GET_LOCK('chatllm.failover', 0), 0) AS got")["got"] != "1") {
        throw AdminError("shard " + shard + ": a failover of it is running; try again");
      }
      locks.push_back(std::move(conn));
    } catch (const DbError&) {
      if (r == target->member) throw AdminError("shard " + shard + ": " + MemberText(r) + " does not answer");
    }
  }
  auto old_primary = Connect(*e, e->primary(), 5, wait_s);
  auto candidate = Connect(*e, target->member, 5, wait_s);
  // Writes stop here: the apps get "read-only" and wait for the new map.
  // Until the candidate is promoted, any failure gives them back.
  old_primary->Exec("SET GLOBAL read_only = ON");
  std::string pos;
  bool caught_up = false;
  try {
    pos = old_primary->Row("SELECT @@global.gtid_binlog_pos AS pos")["pos"];
    caught_up = WaitApplied(*candidate, pos, config_.ha_catchup_timeout_ms);
  } catch (const std::exception& err) {
    LOG_WARN("shard %s: switchover: %s", shard.c_str(), err.what());
  }
  if (!caught_up) {
    old_primary->Exec("SET GLOBAL read_only = OFF");
    throw AdminError("shard " + shard + ": " + MemberText(target->member) + " did not catch up within " +
                     std::to_string(config_.ha_catchup_timeout_ms) + " ms; the old primary takes writes again");
  }
  std::vector<DbMember> replicas{e->primary()};
  for (const DbMember& r : e->replicas) {
    if (!(r == target->member)) replicas.push_back(r);
  }
  Promote(*candidate, true);
  // The old primary follows the new one before the map names it, so the
  // new primary's first commit has a replica to acknowledge it.
  ReplicateFrom(*old_primary, target->member, true);
  for (const DbMember& r : e->replicas) {
    if (r == target->member) continue;
    try {
      auto other = Connect(*e, r, 5, wait_s);
      if (WaitApplied(*other, pos, config_.ha_catchup_timeout_ms)) {
        ReplicateFrom(*other, target->member, false);
      } else {
        LOG_WARN("shard %s: replica %s did not catch up; left as it is (rejoin it)", shard.c_str(),
                 MemberText(r).c_str());
        replicas.erase(std::remove(replicas.begin(), replicas.end(), r), replicas.end());
      }
    } catch (const std::exception& err) {
      LOG_WARN("shard %s: replica %s: %s; not listed (rejoin it)", shard.c_str(), MemberText(r).c_str(), err.what());
      replicas.erase(std::remove(replicas.begin(), replicas.end(), r), replicas.end());
    }
  }
  auto next = PublishPrimary(*map, shard, target->member, replicas);
  RunHook("switchover", shard,
          MemberText(e->primary()) + " -> " + MemberText(target->member) + " in " +
              std::to_string((MonotonicMicros() - start) / 1000) + " ms, epoch " + std::to_string(next->epoch()));
  return next;
}

FailoverResult ShardHa::Failover(const std::string& shard, bool force) {
  FailoverResult out;
  const int64_t start = MonotonicMicros();
  auto map = admin_.LoadMap();
  const ShardEntry* e = map->Find(shard);
  if (!e) throw AdminError("no shard named " + shard + " in map epoch " + std::to_string(map->epoch()));
  auto refuse = [&](const std::string& why) {
    out.reason = why;
    return out;
  };
  if (e->replicas.empty()) return refuse("no replica to promote");
  bool primary_up = false;  // Up but read-only: restarted, or fenced by a switchover that failed.
  if (!force) {
    MemberReport p = Report(*e, e->primary(), "primary");
    if (p.reachable && !p.read_only) return refuse("the primary answers and takes writes");
    primary_up = p.reachable;
    if (e->promoted_at != 0 && NowSeconds() - e->promoted_at < config_.ha_min_failover_interval_s) {
      RunHook("failover-refused", shard, "within min_failover_interval_s of the last change");
      return refuse("the last change of primary was less than [ha] min_failover_interval_s ago");
    }
  }
  // One decider at a time: a lock on every reachable replica, taken in map
  // order without waiting. Another shardctl holding any of them is failing
  // over this shard right now.
  std::vector<std::pair<DbMember, std::unique_ptr<Conn>>> replicas;
  for (const DbMember& r : e->replicas) {
    try {
      auto conn = Connect(*e, r, 1, 120);
      auto got = conn->Row("SELECT COALESCE(GET_LOCK('chatllm.failover', 0), 0) AS got");
      if (got["got"] != "1") return refuse("another shardctl is failing this shard over");
      replicas.emplace_back(r, std::move(conn));
    } catch (const DbError&) {
      // Unreachable: it cannot be promoted, nor acknowledge the old primary.
    }
  }
  // Every listed replica: a commit waits for one acknowledgement, from any
  // of them, so only all of them together surely hold every acknowledged
  // write, and only with all of them cut off can the old primary commit
  // nothing more. Two deciders cannot both lock them all. (--force: the
  // operator says the missing ones hold nothing the others lack.)
  if (replicas.empty() || (!force && replicas.size() < e->replicas.size())) {
    return refuse("reached " + std::to_string(replicas.size()) + " of " + std::to_string(e->replicas.size()) +
                  " replicas; every one is needed (failover --force decides without the others)");
  }
  // A listed replica that takes writes was promoted by a failover that did
  // not get to publish its map (or whose map this decider cannot read):
  // never a second one; that one is finished instead.
  std::optional<size_t> promoted;
  for (size_t i = 0; i < replicas.size(); ++i) {
    if (replicas[i].second->Row("SELECT @@global.read_only AS ro")["ro"] != "0") continue;
    if (promoted) {
      RunHook("failover-refused", shard, "two replicas take writes");
      return refuse("replicas " + MemberText(replicas[*promoted].first) + " and " + MemberText(replicas[i].first) +
                    " both take writes: an operator must decide");
    }
    promoted = i;
  }
  // Under the lock, the map may have moved on (another decider finished).
  auto now_map = admin_.LoadMap();
  const ShardEntry* now_e = now_map->Find(shard);
  if (!now_e || !(now_e->primary() == e->primary())) return refuse("the primary already changed");
  if (!force && !primary_up && !promoted) {
    // The replicas must have lost the primary too: a primary that only
    // this shardctl cannot reach (a partition between the two) is not dead.
    for (auto& [m, conn] : replicas) {
      auto slave = conn->Row("SHOW SLAVE STATUS");
      if (slave["Slave_IO_Running"] == "Yes")
        return refuse("replica " + MemberText(m) + " still hears from the primary");
    }
  }
  // Cut the old primary off from every acknowledgement: from here it can
  // commit nothing (its commits wait for a replica, without a timeout).
  for (auto& [m, conn] : replicas) {
    if (!promoted) conn->Exec("STOP SLAVE IO_THREAD");
  }
  size_t best = promoted.value_or(0);
  if (!promoted) {
    std::vector<std::string> received(replicas.size());
    for (size_t i = 0; i < replicas.size(); ++i) {
      received[i] = replicas[i].second->Row("SHOW SLAVE STATUS")["Gtid_IO_Pos"];
      if (GtidSeq(received[i]) > GtidSeq(received[best])) best = i;
    }
    // Everything it received was acknowledged to the old primary, and may
    // have been to a client: it is applied before the replica takes writes.
    if (!WaitApplied(*replicas[best].second, received[best], 60000)) {
      for (auto& [m, conn] : replicas) conn->Exec("START SLAVE IO_THREAD");
      return refuse("replica " + MemberText(replicas[best].first) + " did not apply its relay log within 60 s");
    }
  }
  Conn& chosen = *replicas[best].second;
  std::vector<DbMember> followers;
  for (size_t i = 0; i < replicas.size(); ++i) {
    if (i == best) continue;
    // A replica behind the chosen one gets the rest from it; one that
    // received more than it (impossible with one domain: it would be the
    // best) is left out and must be rejoined.
    try {
      ReplicateFrom(*replicas[i].second, replicas[best].first, false);
      followers.push_back(replicas[i].first);
    } catch (const std::exception& err) {
      LOG_WARN("shard %s: replica %s could not follow the new primary: %s", shard.c_str(),
               MemberText(replicas[i].first).c_str(), err.what());
    }
  }
  Promote(chosen, !followers.empty());
  auto next = PublishPrimary(*now_map, shard, replicas[best].first, followers);
  out.promoted = true;
  out.primary = replicas[best].first;
  out.epoch = next->epoch();
  out.took_ms = (MonotonicMicros() - start) / 1000;
  out.reason = MemberText(e->primary()) + " -> " + MemberText(out.primary) + " in " + std::to_string(out.took_ms) +
               " ms, epoch " + std::to_string(out.epoch) + (followers.empty() ? " (no replica left: rejoin one)" : "");
  for (auto& [m, conn] : replicas) {
    try {
      conn->Exec("DO RELEASE_LOCK('chatllm.failover')");
    } catch (const std::exception&) {
      // Released with the connection anyway.
    }
  }
  RunHook("failover", shard, out.reason);
  return out;
}

std::shared_ptr<const ClusterMap> ShardHa::Rejoin(const std::string& shard, const DbMember& member) {
  auto map = admin_.LoadMap();
  const ShardEntry* e = map->Find(shard);
  if (!e) throw AdminError("no shard named " + shard + " in map epoch " + std::to_string(map->epoch()));
  if (e->primary() == member) throw AdminError(MemberText(member) + " is the primary of shard " + shard);
  auto conn = Connect(*e, member, 5, 120);
  auto primary = Connect(*e, e->primary(), 5, 120);
  auto mv = conn->Row("SELECT @@global.read_only AS ro, @@global.gtid_binlog_pos AS pos");
  auto pv = primary->Row("SELECT @@global.read_only AS ro, @@global.gtid_binlog_pos AS pos");
  if (pv["ro"] != "0")
    throw AdminError("shard " + shard + ": its primary " + MemberText(e->primary()) + " is read-only");
  if (mv["ro"] == "0") {
    throw AdminError("shard " + shard + ": " + MemberText(member) +
                     " takes writes: it may be the primary the map should name; not rejoining it");
  }
  if (GtidSeq(mv["pos"]) > GtidSeq(pv["pos"])) {
    throw AdminError("shard " + shard + ": " + MemberText(member) + " wrote more (" + mv["pos"] +
                     ") than the primary (" + pv["pos"] +
                     "): it may hold writes the primary lacks; an operator must decide");
  }
  // current_pos: a former primary resumes from what it wrote itself.
  ReplicateFrom(*conn, e->primary(), true);
  // Replicating, with no error: the primary's answer to where it resumes
  // comes after the IO thread says "Yes", so look for a few rounds.
  const int64_t deadline = MonotonicMicros() + 10'000'000;
  int healthy_rounds = 0;
  while (healthy_rounds < 5) {
    auto slave = conn->Row("SHOW SLAVE STATUS");
    if (slave["Last_IO_Errno"] == "1236") {
      conn->Exec("STOP SLAVE");
      throw AdminError("shard " + shard + ": " + MemberText(member) +
                       " holds transactions the primary does not have (it diverged when it failed): rebuild it "
                       "from the primary (docs/operations.md, \"Rebuilding a member\")");
    }
    const bool ok = slave["Slave_IO_Running"] == "Yes" && slave["Slave_SQL_Running"] == "Yes" &&
                    slave["Last_IO_Errno"] == "0" && slave["Last_SQL_Errno"] == "0";
    healthy_rounds = ok ? healthy_rounds + 1 : 0;
    if (MonotonicMicros() > deadline) {
      throw AdminError("shard " + shard + ": " + MemberText(member) + " does not replicate: " + slave["Last_IO_Error"] +
                       slave["Last_SQL_Error"]);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!WaitApplied(*conn, primary->Row("SELECT @@global.gtid_binlog_pos AS pos")["pos"], 60000)) {
    throw AdminError("shard " + shard + ": " + MemberText(member) + " did not catch up within 60 s; run rejoin again");
  }
  // The primary waits for acknowledgements again, and the member holds
  // everything the primary committed before that, before the member is
  // listed (only a listed replica is ever promoted). If the member does not
  // acknowledge, waiting is turned off again: a primary waiting for nobody
  // would stop taking writes.
  primary->Exec("SET GLOBAL rpl_semi_sync_master_enabled = ON");
  try {
    const int64_t ack_deadline = MonotonicMicros() + 5'000'000;
    while (std::atoll(primary->Row("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_clients'")["Value"].c_str()) < 1) {
      if (MonotonicMicros() > ack_deadline) throw AdminError(MemberText(member) + " does not acknowledge");
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    const std::string pos = primary->Row("SELECT @@global.gtid_binlog_pos AS pos")["pos"];
    if (!WaitApplied(*conn, pos, 60000)) throw AdminError(MemberText(member) + " did not catch up within 60 s");
  } catch (const std::exception& err) {
    if (e->replicas.empty()) RunsAlone(*primary);
    throw AdminError("shard " + shard + ": " + err.what() + "; run rejoin again");
  }
  // The primary keeps innodb_flush_log_at_trx_commit = 3 (RunsAlone): its
  // own crash recovery never drops a commit it acknowledged.
  std::vector<DbMember> replicas = e->replicas;
  if (std::find(replicas.begin(), replicas.end(), member) == replicas.end()) replicas.push_back(member);
  std::vector<ShardEntry> shards = map->shards();
  for (ShardEntry& s : shards) {
    if (s.name == shard) s.replicas = replicas;
  }
  auto next = ClusterMap::Build(map->epoch() + 1, std::move(shards), map->homes_state());
  if (!next.ok()) throw AdminError("the new map would be invalid: " + next.status().message());
  admin_.PublishWhereReachable(**next, shard);
  RunHook("rejoin", shard, MemberText(member) + " replicates from " + MemberText(e->primary()));
  return *next;
}

}  // namespace chatllm
