#include "api/key_cache.h"

namespace chatllm {

const KeyRecord* KeyCache::Find(const std::string& key_id, int64_t now_us) {
  auto it = entries_.find(key_id);
  if (it == entries_.end()) return nullptr;
  if (now_us - it->second.fetched_us > ttl_us_) {
    lru_.erase(it->second.lru);
    entries_.erase(it);
    return nullptr;
  }
  lru_.splice(lru_.begin(), lru_, it->second.lru);
  return &it->second.record;
}

void KeyCache::Put(const std::string& key_id, KeyRecord record, int64_t now_us) {
  if (ttl_us_ <= 0 || capacity_ == 0) return;
  auto it = entries_.find(key_id);
  if (it != entries_.end()) {
    lru_.erase(it->second.lru);
    entries_.erase(it);
  }
  while (entries_.size() >= capacity_) {
    entries_.erase(lru_.back());
    lru_.pop_back();
  }
  lru_.push_front(key_id);
  entries_.emplace(key_id, Entry{std::move(record), now_us, lru_.begin()});
}

}  // namespace chatllm
