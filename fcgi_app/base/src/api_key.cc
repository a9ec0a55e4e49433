#include "base/api_key.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "base/base64url.h"
#include "base/ids.h"

namespace chatllm {
namespace {

constexpr size_t kIdBytes = 8, kSecretBytes = 32;
constexpr size_t kSecretChars = 43;  // ceil(32 * 8 / 6), no padding.

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

}  // namespace

ApiKey GenerateApiKey() {
  ApiKey k;
  k.id.resize(kIdBytes);
  k.secret.resize(kSecretBytes);
  RandomBytes(k.id.data(), k.id.size());
  RandomBytes(k.secret.data(), k.secret.size());
  return k;
}

std::string Hex(std::string_view bytes) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

std::string FormatApiKey(const ApiKey& key) { return "ck_" + Hex(key.id) + "_" + Base64UrlEncode(key.secret); }

std::optional<ApiKey> ParseApiKey(std::string_view text) {
  // RFC 6750: "Bearer" 1*SP token, the scheme case-insensitive (RFC 7235).
  // nginx's per-key limit reads the key id with the same rule
  // (conf/nginx.conf.in), so every key accepted here is also counted there.
  constexpr std::string_view kBearer = "bearer";
  if (text.size() <= kBearer.size() || text[kBearer.size()] != ' ') return std::nullopt;
  for (size_t i = 0; i < kBearer.size(); ++i) {
    if ((text[i] | 0x20) != kBearer[i]) return std::nullopt;
  }
  text.remove_prefix(kBearer.size());
  while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
  if (text.size() != 3 + 2 * kIdBytes + 1 + kSecretChars || text.substr(0, 3) != "ck_" ||
      text[3 + 2 * kIdBytes] != '_') {
    return std::nullopt;
  }
  ApiKey key;
  for (size_t i = 0; i < kIdBytes; ++i) {
    int hi = HexValue(text[3 + 2 * i]), lo = HexValue(text[4 + 2 * i]);
    if (hi < 0 || lo < 0) return std::nullopt;
    key.id.push_back(static_cast<char>(hi << 4 | lo));
  }
  // 43 characters carry 258 bits: the last 2 must be zero (one spelling per key).
  if (!Base64UrlDecode(text.substr(4 + 2 * kIdBytes), &key.secret) || key.secret.size() != kSecretBytes) {
    return std::nullopt;
  }
  return key;
}

std::string SecretHash(std::string_view secret) {
  unsigned char sha[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(secret.data()), secret.size(), sha);
  return std::string(reinterpret_cast<const char*>(sha), sizeof(sha));
}

bool SameBytes(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace chatllm
