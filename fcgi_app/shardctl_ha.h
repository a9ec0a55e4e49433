#pragma once

// shardctl's commands for the shards' replicas (shardctl_ha.cc): members,
// switchover, failover, rejoin, replicate, monitor.

#include <functional>
#include <vector>

#include "base/config.h"
#include "base/options.h"
#include "store/cluster_map.h"

namespace chatllm {

using ShardctlCommand = int (*)(const Config&, const ParsedArgs&);
// `with_config` wraps a command as shardctl.cc's others are (config loaded,
// errors one line and exit 1).
std::vector<CommandSpec> HaCommands(
    const std::function<std::function<int(const ParsedArgs&)>(ShardctlCommand)>& with_config);

// "host:port, host:port" -> members; false if an item is not host:port.
bool ParseMemberList(const std::string& text, std::vector<DbMember>* out);

// Before add-shard migrates a new shard: its replicas (if any) follow it
// and it takes writes (every member of a replicated deployment starts
// read-only). A shard that already does is left as it is.
void PrepareNewShard(const Config& config, const ShardEntry& entry);

// The members table that `shardctl status` prints after the shards when any
// shard has replicas. Returns the number of members with a problem.
int PrintMembers(const Config& config);

}  // namespace chatllm
