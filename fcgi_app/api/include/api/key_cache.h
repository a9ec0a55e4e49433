#pragma once

#include <cstdint>
#include <list>
#include <string>
#include <unordered_map>

#include "store/records.h"

namespace chatllm {

// Per worker thread: the key records read recently, for `ttl_us`, so that a
// request costs no database read while its key is cached. The secret is
// checked against the stored hash on every request, cached or not.
class KeyCache {
 public:
  KeyCache(int64_t ttl_us, size_t capacity) : ttl_us_(ttl_us), capacity_(capacity) {}
  // The record cached for `key_id` and not older than the TTL, or null.
  const KeyRecord* Find(const std::string& key_id, int64_t now_us);
  void Put(const std::string& key_id, KeyRecord record, int64_t now_us);

 private:
  struct Entry {
    KeyRecord record;
    int64_t fetched_us;
    std::list<std::string>::iterator lru;
  };
  int64_t ttl_us_;
  size_t capacity_;
  std::unordered_map<std::string, Entry> entries_;
  std::list<std::string> lru_;  // Most recent first.
};

}  // namespace chatllm
