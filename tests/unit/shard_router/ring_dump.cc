// ring_dump "a:100,b:100" < keys  -> one owner per line (for ring_reference.py).
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "shard_router/ring.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: ring_dump NAME:WEIGHT[,NAME:WEIGHT...] < keys\n";
    return 2;
  }
  std::vector<shard_router::ShardWeight> shards;
  std::stringstream spec(argv[1]);
  std::string item;
  while (std::getline(spec, item, ',')) {
    size_t colon = item.find(':');
    shards.push_back({item.substr(0, colon), static_cast<uint32_t>(std::stoul(item.substr(colon + 1)))});
  }
  shard_router::Ring ring;
  shard_router::Status st = shard_router::Ring::Build(shards, &ring);
  if (!st.ok()) {
    std::cerr << st.message() << "\n";
    return 1;
  }
  std::string key;
  while (std::getline(std::cin, key)) std::cout << ring.Lookup(key) << "\n";
  return 0;
}
