#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace chatllm {

// API keys (docs/security.md). A key is
//   "ck_" + 16 hex digits (the key id, 8 random bytes) + "_" + 43 base64url
//   characters (the secret, 32 random bytes)
// The id names the key's row; only SHA-256 of the secret is stored. A 256-bit
// random secret cannot be guessed or brute-forced from its hash, so a fast
// hash is enough (a slow password hash protects low-entropy passwords).
struct ApiKey {
  std::string id;      // 8 raw bytes.
  std::string secret;  // 32 raw bytes.
};

// A new key from the kernel CSPRNG.
ApiKey GenerateApiKey();
std::string FormatApiKey(const ApiKey& key);
// The key in an "Authorization: Bearer <key>" value (RFC 6750: the scheme
// in any case, one or more spaces); nullopt for anything else, a bare key
// included.
std::optional<ApiKey> ParseApiKey(std::string_view authorization);
// SHA-256 of the secret (32 raw bytes).
std::string SecretHash(std::string_view secret);
// Constant-time comparison of two equally long byte strings.
bool SameBytes(std::string_view a, std::string_view b);
std::string Hex(std::string_view bytes);

// What the shards store for one key (Store::LookupApiKey).
struct KeyRecord {
  std::string user_id;        // 16 raw bytes.
  std::string secret_sha256;  // 32 raw bytes.
  int64_t expires_us = 0;     // 0: never.
  bool revoked = false;
  bool user_disabled = false;
};

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
