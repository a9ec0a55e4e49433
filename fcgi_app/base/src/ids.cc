#include "base/ids.h"

#include <openssl/sha.h>
#include <sys/random.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

namespace chatllm {
namespace {

constexpr char kHex[] = "0123456789abcdef";

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string FormatUuid(const std::string& bytes) {
  std::string out;
  out.reserve(36);
  for (size_t i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    unsigned char b = static_cast<unsigned char>(bytes[i]);
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 0xf]);
  }
  return out;
}

}  // namespace

void RandomBytes(void* out, size_t len) {
  auto* p = static_cast<unsigned char*>(out);
  while (len > 0) {
    ssize_t n = getrandom(p, len, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::perror("getrandom");
      std::abort();
    }
    p += n;
    len -= static_cast<size_t>(n);
  }
}

SessionId SessionId::Generate() {
  std::string bytes(16, '\0');
  RandomBytes(bytes.data(), bytes.size());
  bytes[6] = static_cast<char>((bytes[6] & 0x0f) | 0x40);  // Version 4.
  bytes[8] = static_cast<char>((bytes[8] & 0x3f) | 0x80);  // RFC 4122 variant.
  return FromBytes(bytes);
}

namespace {

SessionId NameBased(std::string_view name, int version) {
  unsigned char sha[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(name.data()), name.size(), sha);
  std::string bytes(reinterpret_cast<const char*>(sha), 16);
  bytes[6] = static_cast<char>((bytes[6] & 0x0f) | (version << 4));
  bytes[8] = static_cast<char>((bytes[8] & 0x3f) | 0x80);  // RFC 4122 variant.
  return SessionId::FromBytes(bytes);
}

}  // namespace

SessionId SessionId::FromName(std::string_view name) { return NameBased(name, 8); }

SessionId SessionId::HomeOf(std::string_view user) {
  std::string name = "home\n";
  name.append(user.data(), user.size());
  return NameBased(name, 11);
}

SessionId SessionId::KeyUnitOf(std::string_view key_id) {
  std::string name = "key\n";
  name.append(key_id.data(), key_id.size());
  return NameBased(name, 12);
}

bool SessionId::names_session() const {
  const int version = (static_cast<unsigned char>(bytes_[6]) >> 4) & 0x0f;
  return version == 4 || version == 8;
}

std::optional<SessionId> SessionId::Parse(std::string_view text) {
  if (text.size() != 36) return std::nullopt;
  std::string bytes;
  bytes.reserve(16);
  for (size_t i = 0; i < 36;) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') return std::nullopt;
      ++i;
      continue;
    }
    int hi = HexValue(text[i]);
    int lo = HexValue(text[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    bytes.push_back(static_cast<char>(hi << 4 | lo));
    i += 2;
  }
  return FromBytes(bytes);
}

SessionId SessionId::FromBytes(std::string_view bytes) {
  SessionId id;
  id.bytes_.assign(bytes.data(), bytes.size());
  id.text_ = FormatUuid(id.bytes_);
  return id;
}

}  // namespace chatllm
