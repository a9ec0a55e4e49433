#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "admin/cluster_admin.h"
#include "base/config.h"
#include "store/cluster_map.h"

namespace chatllm {

// What one MariaDB server of a shard says about itself (ShardHa::Status).
struct MemberReport {
  DbMember member;
  std::string role;  // "primary" or "replica" as the map lists it; "unlisted".
  bool reachable = false;
  std::string error;  // Why it is unreachable, or its replication error.
  bool read_only = true;
  std::string gtid_binlog_pos;  // What it has written to its binary log.
  // As a replica: where it replicates from, whether both threads run, and
  // how far behind it is (-1: unknown).
  std::string source;
  bool io_running = false, sql_running = false;
  int64_t lag_s = -1;
  std::string gtid_io_pos;  // What it has received.
  // As a primary: semi-synchronous replication on, and replicas acknowledging.
  bool semi_sync = false;
  int64_t semi_sync_clients = 0;
};

struct ShardHaReport {
  std::string shard;
  std::vector<MemberReport> members;  // The primary first.
  int64_t promoted_at = 0;
  // The map's primary answers and takes writes.
  bool writable() const { return !members.empty() && members[0].reachable && !members[0].read_only; }
};

// The outcome of one failover attempt (ShardHa::Failover).
struct FailoverResult {
  bool promoted = false;
  std::string reason;  // Why not, or what was done.
  DbMember primary;    // The new primary when promoted.
  uint64_t epoch = 0;  // The map that names it.
  int64_t took_ms = 0;
};

// Replicas, switchover, failover and rejoin of the shards' MariaDB servers
// (shardctl; docs/architecture.md "Shard high availability" has the design
// and why it cannot make two primaries). Replication is MariaDB's own: GTID
// with semi-synchronous acknowledgement after the binary log is synced
// (AFTER_SYNC) and no timeout, so a primary acknowledges a commit only once
// a replica holds it. Replication statements run as [ha] user; maps are
// published through ClusterAdmin (the migrate account). Not thread-safe.
class ShardHa {
 public:
  ShardHa(const Config& config, ClusterAdmin& admin);
  ~ShardHa();

  // Every shard's members as they report themselves, asked in parallel.
  std::vector<ShardHaReport> Status(const ClusterMap& map);

  // First start of a cluster (and of each new replica): points every
  // replica the map lists at its shard's primary and makes each primary
  // writable. A primary already writable, a replica already replicating
  // from it, are left as they are. Refuses a primary that is read-only
  // while a replica of its shard is writable or replicates from elsewhere
  // (that takes a failover or a rejoin, not a bootstrap).
  void Bootstrap(const ClusterMap& map);

  // Planned: writes pause (the primary turns read-only, the apps wait for
  // the new map), `to` (default: the replica furthest ahead) catches up
  // within [ha] catchup_timeout_ms, becomes the primary, the old primary
  // replicates from it, the map is published. On a catch-up timeout the old
  // primary takes writes again and nothing changed.
  std::shared_ptr<const ClusterMap> Switchover(const std::string& shard, const std::optional<DbMember>& to);

  // Unplanned: promotes the replica furthest ahead when the primary is dead
  // (unreachable, or back but read-only after a restart) and its replicas
  // no longer hear from it either. `force` skips those two checks and the
  // anti-flap window (an operator's decision). Never promotes while another
  // shardctl is at it (a lock on the replicas).
  FailoverResult Failover(const std::string& shard, bool force);

  // The old primary (or any member not in the map) replicates from the
  // shard's primary again; once it has caught up it is listed as a replica
  // and the primary waits for its acknowledgements again. Throws if its
  // history diverged (it holds transactions the primary lacks): rebuild it.
  std::shared_ptr<const ClusterMap> Rejoin(const std::string& shard, const DbMember& member);

  // The automatic side: watches every primary every [ha] check_ms and fails
  // over a shard whose primary was dead for [ha] down_after_ms. Run one on
  // each of several hosts: they cannot both promote (Failover's lock), and
  // the loser sees the new map. Returns after `rounds` rounds (0: never).
  // With `metrics_file`, writes every member's state there each round, in
  // the Prometheus text format (node_exporter's textfile collector reads it).
  void Monitor(int64_t rounds, const std::string& metrics_file = "");

 private:
  class Conn;
  // `timeout_s` to connect; reads wait up to `read_timeout_s` (at least 2 s).
  std::unique_ptr<Conn> Connect(const ShardEntry& shard, const DbMember& m, int timeout_s, int read_timeout_s = 2);
  MemberReport Report(const ShardEntry& shard, const DbMember& m, const std::string& role);
  // Points `replica` at `primary` (GTID, the last position it applied or
  // wrote) and starts replicating.
  void ReplicateFrom(Conn& replica, const DbMember& primary, bool from_current_pos);
  // Waits until `replica` has applied `gtid` (MASTER_GTID_WAIT); false on timeout.
  bool WaitApplied(Conn& replica, const std::string& gtid, int timeout_ms);
  // Detaches `conn` from any primary and makes it writable.
  void Promote(Conn& conn, bool semi_sync);
  // The primary `conn` stops waiting for acknowledgements, after it flushes
  // InnoDB's commit records too (innodb_flush_log_at_trx_commit = 3).
  void RunsAlone(Conn& conn);
  std::shared_ptr<const ClusterMap> PublishPrimary(const ClusterMap& map, const std::string& shard,
                                                   const DbMember& primary, std::vector<DbMember> replicas);
  void RunHook(const std::string& event, const std::string& shard, const std::string& detail);
  // Monitor: `e`'s primary waits for acknowledgements and no replica sends
  // them: the replicas leave the map and the primary runs alone. True if done.
  bool Degrade(const ShardEntry& e);
  // The members' state in the Prometheus text format, written to `path`
  // through a temporary file and a rename.
  void WriteMetrics(const ClusterMap& map, const std::string& path, int64_t failovers);
  // Makes a former primary `m` read-only once it answers (monitor).
  void Fence(const ShardEntry& shard, const DbMember& m);

  const Config& config_;
  ClusterAdmin& admin_;
};

}  // namespace chatllm
