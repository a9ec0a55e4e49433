#include "store/cluster_map.h"

#include "base/json.h"

namespace chatllm {

StatusOr<std::shared_ptr<const ClusterMap>> ClusterMap::Build(uint64_t epoch, std::vector<ShardEntry> shards,
                                                              Homes homes) {
  std::vector<shard_router::MapShard> ring_shards;
  for (const ShardEntry& s : shards) ring_shards.push_back({s.name, s.weight, s.state});
  auto map = std::make_shared<ClusterMap>();
  shard_router::Status st = shard_router::Router::Build(epoch, std::move(ring_shards), &map->router_);
  if (!st.ok()) return Status::Invalid(st.message());
  map->shards_ = std::move(shards);
  map->homes_ = homes;
  return std::shared_ptr<const ClusterMap>(std::move(map));
}

StatusOr<std::shared_ptr<const ClusterMap>> ClusterMap::FromJson(const std::string& json) {
  rapidjson::Document d;
  if (Status s = ParseJson(json, &d); !s.ok()) return s;
  if (!d.IsObject() || !d.HasMember("epoch") || !d["epoch"].IsUint64() || !d.HasMember("shards") ||
      !d["shards"].IsArray()) {
    return Status::Invalid("shard map must be {\"epoch\": N, \"shards\": [...]}");
  }
  std::vector<ShardEntry> shards;
  for (const auto& v : d["shards"].GetArray()) {
    ShardEntry s;
    if (!v.IsObject() || !v.HasMember("name") || !v["name"].IsString() || !v.HasMember("host") ||
        !v["host"].IsString() || !v.HasMember("port") || !v["port"].IsInt() || !v.HasMember("database") ||
        !v["database"].IsString() || !v.HasMember("weight") || !v["weight"].IsUint() || !v.HasMember("state") ||
        !v["state"].IsString() || !shard_router::ParseShardState(v["state"].GetString(), &s.state)) {
      return Status::Invalid("shard map entry must have name, host, port, database, weight and a valid state");
    }
    s.name = v["name"].GetString();
    s.host = v["host"].GetString();
    s.port = v["port"].GetInt();
    s.database = v["database"].GetString();
    s.weight = v["weight"].GetUint();
    if (v.HasMember("replicas")) {
      if (!v["replicas"].IsArray()) return Status::Invalid("shard map: replicas must be a list");
      for (const auto& r : v["replicas"].GetArray()) {
        if (!r.IsObject() || !r.HasMember("host") || !r["host"].IsString() || !r.HasMember("port") ||
            !r["port"].IsInt()) {
          return Status::Invalid("shard map: each replica must have host and port");
        }
        s.replicas.push_back(DbMember{r["host"].GetString(), r["port"].GetInt()});
      }
    }
    if (v.HasMember("promoted_at")) {
      if (!v["promoted_at"].IsInt64()) return Status::Invalid("shard map: promoted_at must be a number");
      s.promoted_at = v["promoted_at"].GetInt64();
    }
    shards.push_back(std::move(s));
  }
  Homes homes = Homes::kNone;
  if (d.HasMember("homes")) {
    const auto& h = d["homes"];
    if (h.IsString() && std::string(h.GetString()) == "writing") {
      homes = Homes::kWriting;
    } else if (h.IsString() && std::string(h.GetString()) == "complete") {
      homes = Homes::kComplete;
    } else {
      return Status::Invalid("shard map: homes must be \"writing\" or \"complete\"");
    }
  }
  return Build(d["epoch"].GetUint64(), std::move(shards), homes);
}

std::string ClusterMap::ToJson() const {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  w.Key("epoch");
  w.Uint64(epoch());
  if (homes_ != Homes::kNone) {
    w.Key("homes");
    w.String(homes_ == Homes::kComplete ? "complete" : "writing");
  }
  w.Key("shards");
  w.StartArray();
  for (const ShardEntry& s : shards_) {
    w.StartObject();
    w.Key("name");
    w.String(s.name);
    w.Key("host");
    w.String(s.host);
    w.Key("port");
    w.Int(s.port);
    w.Key("database");
    w.String(s.database);
    w.Key("weight");
    w.Uint(s.weight);
    w.Key("state");
    w.String(shard_router::ShardStateName(s.state));
    if (!s.replicas.empty()) {
      w.Key("replicas");
      w.StartArray();
      for (const DbMember& r : s.replicas) {
        w.StartObject();
        w.Key("host");
        w.String(r.host);
        w.Key("port");
        w.Int(r.port);
        w.EndObject();
      }
      w.EndArray();
    }
    if (s.promoted_at != 0) {
      w.Key("promoted_at");
      w.Int64(s.promoted_at);
    }
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

const ShardEntry* ClusterMap::Find(const std::string& name) const {
  for (const ShardEntry& s : shards_) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

std::shared_ptr<const ClusterMap> SeedMap(const Config& config) {
  std::vector<ShardEntry> entries;
  for (const ShardConfig& s : config.shards) {
    entries.push_back(
        ShardEntry{s.name, s.host, s.port, s.database, s.weight, shard_router::ShardState::kActive, s.replicas, 0});
  }
  auto map = ClusterMap::Build(0, std::move(entries));
  if (!map.ok()) throw ConfigError(config.path + ": shards: " + map.status().message());
  return *map;
}

}  // namespace chatllm
