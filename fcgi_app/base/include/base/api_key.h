#pragma once

#include <optional>
#include <string>
#include <string_view>

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

}  // namespace chatllm
