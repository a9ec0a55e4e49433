#include "store/sharded_store.h"

#include <openssl/sha.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "base/api_key.h"
#include "base/log.h"
#include "base/time_util.h"
#include "routing.h"
#include "store/migrator.h"

namespace chatllm {

std::string IdempotencyTargetSha(std::string_view target) {
  unsigned char sha[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(target.data()), target.size(), sha);
  return std::string(reinterpret_cast<const char*>(sha), 16);
}

ShardedStore::ShardedStore(const Config& config) : config_(config) {
  options_.connect_timeout_s = config.connect_timeout_s;
  options_.read_timeout_s = config.read_timeout_s;
  options_.write_timeout_s = config.write_timeout_s;
  options_.statement_timeout_s = config.statement_timeout_s;
  options_.lock_wait_timeout_s = config.lock_wait_timeout_s;
  options_.down_backoff_ms = config.down_backoff_ms;
  seed_map_ = SeedMap(config);
  map_ = seed_map_;
  if (!config.map_file.empty()) {
    std::ifstream in(config.map_file);
    std::stringstream text;
    text << in.rdbuf();
    if (!in) throw ConfigError(config.path + ": [cluster] map_file: '" + config.map_file + "': cannot read");
    auto from_file = ClusterMap::FromJson(text.str());
    if (!from_file.ok()) {
      throw ConfigError(config.path + ": [cluster] map_file: '" + config.map_file +
                        "': " + from_file.status().message());
    }
    map_ = *from_file;
    // Trust the file until the first periodic refresh (or until a shard
    // says it is stale); without one, the seed map is read over at once.
    next_refresh_us_ = MonotonicMicros() + int64_t{config.map_refresh_ms} * 1000;
  }
  last_epoch_ = map_->epoch();
}

ShardedStore::~ShardedStore() = default;

ShardedStore::Shard& ShardedStore::ShardNamed(const std::string& name) {
  const ShardEntry* entry = map_->Find(name);
  if (!entry) entry = seed_map_->Find(name);
  if (!entry) throw DbError(DbErrorKind::kUnavailable, 0, name, "shard " + name + " is not in the shard map");
  DbEndpoint ep{name, entry->host, entry->port, entry->database, config_.db_user, config_.db_password};
  auto it = shards_.find(name);
  if (it != shards_.end()) {
    const DbEndpoint& old = it->second->endpoint();
    if (old.host == ep.host && old.port == ep.port && old.database == ep.database) return *it->second;
    LOG_INFO("shard %s moved from %s:%d to %s:%d", name.c_str(), old.host.c_str(), old.port, ep.host.c_str(), ep.port);
  }
  auto shard = std::make_unique<Shard>(std::move(ep), options_);
  Shard& ref = *shard;
  shards_[name] = std::move(shard);
  return ref;
}

namespace {

// The newest map stored on the server behind `h` if it is newer than
// `newest`, else `newest`. Throws MysqlError.
std::shared_ptr<const ClusterMap> NewerStoredMap(MYSQL* h, const std::string& name,
                                                 std::shared_ptr<const ClusterMap> newest) {
  MysqlStatement st(h, "SELECT epoch, map FROM shard_map ORDER BY epoch DESC LIMIT 1");
  st.Execute();
  if (st.row_count() == 0 || static_cast<uint64_t>(st.Int64(0, 0)) <= newest->epoch()) return newest;
  auto candidate = ClusterMap::FromJson(st.Text(0, 1));
  if (!candidate.ok()) {
    LOG_ERROR("shard %s: stored shard map epoch %lld is invalid: %s", name.c_str(),
              static_cast<long long>(st.Int64(0, 0)), candidate.status().message().c_str());
    return newest;
  }
  return *candidate;
}

}  // namespace

std::shared_ptr<const ClusterMap> ShardedStore::MapFromReplicas(const ShardEntry& entry,
                                                                std::shared_ptr<const ClusterMap> newest) {
  for (const DbMember& r : entry.replicas) {
    try {
      DbConnection conn(DbEndpoint{entry.name, r.host, r.port, entry.database, config_.db_user, config_.db_password},
                        options_);
      newest = NewerStoredMap(conn.Get(), entry.name, newest);
    } catch (const std::exception& e) {
      LOG_WARN("shard %s: reading the shard map from replica %s failed: %s", entry.name.c_str(), MemberText(r).c_str(),
               e.what());
    }
  }
  return newest;
}

bool ShardedStore::RefreshMap() {
  next_refresh_us_ = MonotonicMicros() + int64_t{config_.map_refresh_ms} * 1000;
  std::vector<std::string> names;
  for (const auto* m : {map_.get(), seed_map_.get()}) {
    for (const ShardEntry& s : m->shards()) {
      if (std::find(names.begin(), names.end(), s.name) == names.end()) names.push_back(s.name);
    }
  }
  std::shared_ptr<const ClusterMap> newest = map_;
  for (const std::string& name : names) {
    try {
      newest = NewerStoredMap(ShardNamed(name).Handle(), name, newest);
    } catch (const MysqlError& e) {
      // 1146: no shard_map table yet (schema 1). Other errors: unreachable
      // shards are skipped; the others still answer.
      if (e.code() != 1146) LOG_WARN("shard %s: reading the shard map failed: %s", name.c_str(), e.what());
      if (ClassifyMysqlErrno(e.code()) == DbErrorKind::kConnectionLost) shards_.erase(name);
      if (const ShardEntry* entry = map_->Find(name)) newest = MapFromReplicas(*entry, newest);
    } catch (const DbError& e) {
      LOG_WARN("shard %s: reading the shard map failed: %s", name.c_str(), e.what());
      if (const ShardEntry* entry = map_->Find(name)) newest = MapFromReplicas(*entry, newest);
    }
  }
  if (newest == map_) return false;
  Adopt(std::move(newest));
  return true;
}

void ShardedStore::Adopt(std::shared_ptr<const ClusterMap> newest) {
  LOG_INFO("shard map: epoch %llu -> %llu", static_cast<unsigned long long>(map_->epoch()),
           static_cast<unsigned long long>(newest->epoch()));
  map_ = std::move(newest);
  for (auto it = shards_.begin(); it != shards_.end();) {
    if (!map_->Find(it->first) && !seed_map_->Find(it->first))
      it = shards_.erase(it);
    else
      ++it;
  }
}

void ShardedStore::MaybeRefresh() {
  if (MonotonicMicros() >= next_refresh_us_) RefreshMap();
}

bool ShardedStore::FenceAhead(const std::string& shard, uint64_t epoch) {
  try {
    return OnShard(ShardNamed(shard), true, "read fence", [&](Prepared& p) {
      p.fence.Execute();
      return p.fence.row_count() == 1 && static_cast<uint64_t>(p.fence.Int64(0, 0)) > epoch;
    });
  } catch (const DbError&) {
    // Cannot say: a frozen copy read there is not served as current (the
    // caller refreshes the map, or answers unavailable).
    return true;
  }
}

void ShardedStore::WaitForNewerMap(const std::string& shard, int64_t deadline, int64_t* backoff_us) {
  if (MonotonicMicros() + *backoff_us > deadline) {
    LOG_WARN("shard %s: its fence is ahead of map epoch %llu, the newest readable; gave up waiting", shard.c_str(),
             static_cast<unsigned long long>(map_->epoch()));
    throw DbError(DbErrorKind::kUnavailable, 0, shard, "the shard map is still being published; retry");
  }
  ::usleep(static_cast<useconds_t>(*backoff_us));
  *backoff_us = std::min<int64_t>(*backoff_us * 2, 20000);
}

void ShardedStore::WaitForPrimary(const std::string& shard, int64_t deadline, int64_t* backoff_us) {
  if (RefreshMap()) return;
  // A primary that is read-only may have been failed over while it was
  // away, and still hold the map it had: its replicas have the newer one.
  if (const ShardEntry* entry = map_->Find(shard)) {
    std::shared_ptr<const ClusterMap> newer = MapFromReplicas(*entry, map_);
    if (newer != map_) {
      Adopt(std::move(newer));
      return;
    }
  }
  if (MonotonicMicros() + *backoff_us > deadline) {
    LOG_WARN("shard %s: read-only, and no newer map names another primary; gave up waiting", shard.c_str());
    throw DbError(DbErrorKind::kUnavailable, 0, shard, "shard " + shard + " is changing its primary");
  }
  ::usleep(static_cast<useconds_t>(*backoff_us));
  *backoff_us = std::min<int64_t>(*backoff_us * 2, 50000);
}

std::vector<std::string> ShardedStore::AllShardNames() const {
  std::vector<std::string> names;
  for (const ShardEntry& s : map_->shards()) names.push_back(s.name);
  return names;
}

std::optional<KeyRecord> ShardedStore::LookupKeyCopies(const std::string& key_id) {
  // The shard the key id hashes to first (its rows stay warm there), then the others.
  std::vector<std::string> order = AllShardNames();
  const std::string first = map_->router().Owner(Hex(key_id));
  std::stable_partition(order.begin(), order.end(), [&](const std::string& n) { return n == first; });
  // While `first` joins, it may not have every key, nor every revocation,
  // yet (shardctl copies them after publishing the map and again before
  // making it active; chatllm-admin writes it from the publish on): a shard
  // that is not joining is asked too, the one that answered for the key id
  // before first, and a key either knows is found, revoked or disabled if
  // either says so. If none of those answers: unavailable, never the
  // joining shard's answer alone.
  if (map_->router().moving()) {
    const std::string before = map_->router().PreviousOwner(Hex(key_id));
    const ShardEntry* owner = map_->Find(first);
    if (owner && owner->state == shard_router::ShardState::kJoining && before != first) {
      std::vector<std::string> others = order;
      others.erase(std::remove(others.begin(), others.end(), first), others.end());
      std::stable_partition(others.begin(), others.end(), [&](const std::string& n) { return n == before; });
      return LookupKeyWhileJoining(first, others, key_id);
    }
  }
  // A joining shard is not asked for keys it does not own: it may lack
  // them, or their revocations.
  std::optional<DbError> last_error;
  for (const std::string& name : order) {
    const ShardEntry* shard = map_->Find(name);
    if (name != first && shard && shard->state == shard_router::ShardState::kJoining) continue;
    try {
      return LookupKeyOn(name, key_id);
    } catch (const DbError& e) {
      last_error = e;  // This copy is unreachable: ask the next shard.
    }
  }
  throw *last_error;
}

std::optional<KeyRecord> ShardedStore::LookupKeyWhileJoining(const std::string& joining,
                                                             const std::vector<std::string>& others,
                                                             const std::string& key_id) {
  std::optional<KeyRecord> a, b;
  std::optional<DbError> a_failed, last_error;
  try {
    a = LookupKeyOn(joining, key_id);
  } catch (const DbError& e) {
    a_failed = e;
  }
  bool answered = false;
  for (const std::string& name : others) {
    try {
      b = LookupKeyOn(name, key_id);
      answered = true;
      break;
    } catch (const DbError& e) {
      last_error = e;
    }
  }
  if (!answered) {
    if (last_error) throw *last_error;
    if (a_failed) throw *a_failed;
    return a;  // The map holds no other shard.
  }
  if (!a) return b;
  if (!b) return a;
  a->revoked = a->revoked || b->revoked;
  a->user_disabled = a->user_disabled || b->user_disabled;
  if (b->expires_us != 0 && (a->expires_us == 0 || b->expires_us < a->expires_us)) a->expires_us = b->expires_us;
  return a;
}

std::optional<KeyRecord> ShardedStore::LookupKeyOn(const std::string& name, const std::string& key_id) {
  return OnShard(ShardNamed(name), true, "look up API key", [&](Prepared& p) -> std::optional<KeyRecord> {
    MysqlStatement& st = p.key;
    st.BindBytes(0, key_id);
    st.Execute();
    if (st.row_count() == 0) return std::nullopt;
    KeyRecord k;
    k.user_id = st.Text(0, 0);
    k.secret_sha256 = st.Text(0, 1);
    k.expires_us = st.IsNull(0, 2) ? 0 : st.DatetimeMicros(0, 2);
    k.revoked = st.Int64(0, 3) != 0;
    k.user_disabled = st.Int64(0, 4) != 0;
    return k;
  });
}

std::vector<ShardStatus> ShardedStore::CheckShards() {
  MaybeRefresh();
  std::vector<ShardStatus> out;
  for (const ShardEntry& entry : map_->shards()) {
    ShardStatus st;
    st.name = entry.name;
    try {
      st.schema_version = OnShard(ShardNamed(entry.name), true, "schema version", [](Prepared& p) {
        p.schema.Execute();
        return p.schema.row_count() == 1 ? static_cast<int>(p.schema.Int64(0, 0)) : 0;
      });
      st.up = st.schema_version >= ExpectedSchemaVersion();
      if (!st.up) {
        st.error = "schema version " + std::to_string(st.schema_version) + ", need " +
                   std::to_string(ExpectedSchemaVersion()) + " (run shardctl migrate)";
      }
    } catch (const DbError& e) {
      st.error = std::string(DbErrorKindName(e.kind())) +
                 (e.mysql_errno() ? " (errno " + std::to_string(e.mysql_errno()) + ")" : "");
    } catch (const MysqlError& e) {
      st.error = "schema not migrated (errno " + std::to_string(e.code()) + ")";  // Prepare failed.
    }
    out.push_back(std::move(st));
  }
  return out;
}

}  // namespace chatllm
