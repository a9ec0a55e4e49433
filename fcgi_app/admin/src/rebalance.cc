// Rebalance: every session to the shard the map names, then the map that
// says so (joining shards active, draining ones drained).

#include <algorithm>
#include <chrono>
#include <map>
#include <thread>

#include "admin/cluster_admin.h"
#include "base/ids.h"
#include "base/time_util.h"
#include "store/mysql_statement.h"

namespace chatllm {

using shard_router::ShardState;

void ClusterAdmin::FinishArrivals(const ClusterMap& map) {
  // Markers left by a run that stopped between tombstoning a source and
  // clearing its target's marker: the source no longer holds the session
  // (moved or absent), so nothing is left to finish but the marker.
  for (const ShardEntry& shard : map.shards()) {
    std::vector<std::pair<std::string, std::string>> marked;  // (id, from)
    OnShard(shard, "reading arrival markers", [&] {
      MysqlStatement& scan =
          Stmt(shard, "SELECT session_id, arrived_from FROM sessions WHERE arrived_from IS NOT NULL");
      scan.Execute();
      for (size_t i = 0; i < scan.row_count(); ++i) marked.emplace_back(scan.Text(i, 0), scan.Text(i, 1));
    });
    for (const auto& [id, from_name] : marked) {
      const ShardEntry* from = map.Find(from_name);
      if (from) {
        const std::string there = SessionState(*from, id);
        if (there != "absent" && there != "moved") continue;  // Still held there: MoveSession finishes it.
      }
      FinishArrival(shard, id);
    }
  }
}

std::vector<ClusterAdmin::Misplaced> ClusterAdmin::FindMisplaced(const ClusterMap& map, int batch, bool dry_run) {
  // Every shard scanned at once, each into its own list.
  std::vector<std::vector<Misplaced>> found(map.shards().size());
  const std::vector<std::exception_ptr> errors = InParallel(map.shards(), [&](const ShardEntry& shard) {
    std::vector<Misplaced>& out = found[static_cast<size_t>(&shard - map.shards().data())];
    OnShard(shard, "scanning sessions", [&] {
      MysqlStatement scan(
          Handle(shard),
          "SELECT session_id, state, message_count + listed FROM sessions WHERE session_id > ? AND state IN "
          "('active', 'moving', 'deleted') ORDER BY session_id LIMIT ?");
      std::string after;
      while (true) {
        scan.BindBytes(0, after);
        scan.BindInt64(1, batch);
        scan.Execute();
        if (scan.row_count() == 0) break;
        for (size_t i = 0; i < scan.row_count(); ++i) {
          const std::string& id = scan.Text(i, 0);
          const std::string& owner = map.router().Owner(SessionId::FromBytes(id).text());
          if (owner != shard.name) {
            out.push_back({id, &shard, map.Find(owner), scan.Int64(i, 2)});
          } else if (scan.Text(i, 1) == "moving" && !dry_run) {
            // Frozen by an interrupted move under another map; it belongs here.
            MysqlStatement thaw(Handle(shard),
                                "UPDATE sessions SET state = 'active' WHERE session_id = ? AND state = 'moving'");
            thaw.BindBytes(0, id);
            thaw.Execute();
          }
        }
        after = scan.Text(scan.row_count() - 1, 0);
      }
    });
  });
  for (const std::exception_ptr& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  std::vector<Misplaced> out;
  for (std::vector<Misplaced>& part : found) {
    for (Misplaced& m : part) out.push_back(std::move(m));
  }
  return out;
}

RebalanceResult ClusterAdmin::Rebalance(const RebalanceOptions& opt) {
  RebalanceResult result;
  const int64_t start = MonotonicMicros();
  auto map = LoadMap();
  LockAll(*map);
  // Every fence must be at this epoch before the scan: otherwise an app with
  // an older map could still create a session on an old owner behind it.
  RequireSchemas(*map);
  bool fenced = true;
  for (const ShardReport& r : Status(*map)) fenced &= static_cast<uint64_t>(r.fence) >= map->epoch();
  if (!fenced && !opt.dry_run) Publish(*map, nullptr);

  const std::vector<Misplaced> pending = FindMisplaced(*map, opt.batch, opt.dry_run);
  result.misplaced = static_cast<int64_t>(pending.size());
  if (opt.progress) opt.progress(0, result.misplaced);
  if (opt.dry_run) {
    result.seconds = (MonotonicMicros() - start) / 1e6;
    return result;
  }
  // In batches of sessions that go the same way (source -> target).
  std::map<std::pair<std::string, std::string>, std::vector<const Misplaced*>> ways;
  for (const Misplaced& p : pending) ways[{p.from->name, p.to->name}].push_back(&p);
  const int64_t move_start = MonotonicMicros();
  const size_t per_batch = static_cast<size_t>(std::max(opt.move_batch, 1));
  for (const auto& [way, sessions] : ways) {
    for (size_t first = 0, n = 0; first < sessions.size(); first += n) {
      // Up to move_batch sessions, and (but at least one) up to
      // kMessagesPerBatch messages: a batch stays frozen while it is
      // copied, so its size bounds how long a write to it may wait.
      int64_t messages = 0;
      for (n = 0; first + n < sessions.size() && n < per_batch; ++n) {
        messages += sessions[first + n]->messages;
        if (n > 0 && messages > kMessagesPerBatch) break;
      }
      const Misplaced& head = *sessions[first];
      if (n == 1) {
        const bool gone = MoveSession(head.id, *head.from, *head.to, map->epoch()) == MoveOutcome::kGone;
        ++(gone ? result.gone : result.moved);
      } else {
        std::vector<std::string> ids;
        for (size_t i = first; i < first + n; ++i) ids.push_back(sessions[i]->id);
        const BatchOutcome moved = MoveBatch(ids, *head.from, *head.to, map->epoch());
        result.moved += moved.moved;
        result.gone += moved.gone;
      }
      if (opt.progress) opt.progress(result.moved + result.gone, result.misplaced);
      if (opt.rate > 0) {
        const int64_t due = move_start + static_cast<int64_t>((result.moved + result.gone) * 1e6 / opt.rate);
        const int64_t wait = due - MonotonicMicros();
        if (wait > 0) std::this_thread::sleep_for(std::chrono::microseconds(wait));
      }
    }
  }
  FinishArrivals(*map);
  std::shared_ptr<const ClusterMap> settled = map;
  if (map->router().moving()) {
    // Users and keys onto joining shards once more: add-shard's copy after
    // its publish may not have run (it died there). Until now a lookup whose
    // owner is joining also asked a shard that is not (ShardedStore::
    // LookupApiKey); from the publish below, the new shard answers alone.
    for (const ShardEntry& s : map->shards()) {
      if (s.state == ShardState::kJoining) CopyAuth(*map, s);
    }
    // Everything is in place: joining shards become active, draining ones drained.
    std::vector<ShardEntry> shards = map->shards();
    for (ShardEntry& s : shards) {
      if (s.state == ShardState::kJoining) s.state = ShardState::kActive;
      if (s.state == ShardState::kDraining) s.state = ShardState::kDrained;
    }
    auto next = Next(*map, std::move(shards));
    Publish(*next, map.get());
    result.final_epoch = next->epoch();
    settled = next;
  }
  if (!settled->homes()) {
    // Every session is on its owner. First the apps keep the homes up to
    // date (the publish raises every fence: a create or delete that commits
    // from here on maintains its entry); then every session made before is
    // listed on its user's home; then the map says the homes are complete
    // (the apps then list and count from them).
    if (!settled->homes_written()) settled = PublishHomes(*settled, ClusterMap::Homes::kWriting);
    // chatllm-admin's writes of users and keys wait from here to the publish
    // of "complete": none may fall between FillKeys' reading of the copies
    // and the apps reading only the units.
    AuthLock auth(*this, *settled);
    result.listed = FillHomes(*settled);
    result.keys = FillKeys(*settled);
    result.homes_epoch = PublishHomes(*settled, ClusterMap::Homes::kComplete)->epoch();
  }
  UnlockAll(*map);
  result.seconds = (MonotonicMicros() - start) / 1e6;
  return result;
}

}  // namespace chatllm
