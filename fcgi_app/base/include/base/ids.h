#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace chatllm {

// A session id: a random (version 4) UUID, 122 random bits from getrandom(2).
// On the wire and on the ring it is the canonical 36-character lowercase text
// form; in the database it is the 16 raw bytes (BINARY(16)).
class SessionId {
 public:
  // Draws a new id from the kernel CSPRNG. Aborts if getrandom fails, which
  // only happens on a broken kernel.
  static SessionId Generate();
  // Accepts the canonical 8-4-4-4-12 hex form in either case; nullopt for
  // anything else (wrong length, non-hex, misplaced hyphens).
  static std::optional<SessionId> Parse(std::string_view text);
  // Wraps 16 raw bytes read back from the database. Requires size 16.
  static SessionId FromBytes(std::string_view bytes);
  // A name-based (version 8, RFC 9562) id: the first 122 bits of
  // SHA-256(`name`). The same name always gives the same id; an
  // Idempotency-Key on session creation uses it so that a retry lands on
  // the same shard as the first attempt.
  static SessionId FromName(std::string_view name);
  // The id of `user`'s home (16 raw bytes; empty: no user), the placement
  // unit that holds the user's session list (sql/009_homes.sql): derived
  // from the user id like FromName, with version 11, which no session id
  // has, so a client can never name a home as a session.
  static SessionId HomeOf(std::string_view user);
  // The id of the placement unit of the API key `key_id` (8 raw bytes),
  // version 12: the key's only authoritative row (sql/009_homes.sql).
  static SessionId KeyUnitOf(std::string_view key_id);

  // True for the ids sessions have (version 4 random, version 8 keyed):
  // anything else names no session, whatever the store holds under it.
  bool names_session() const;

  const std::string& text() const { return text_; }    // Lowercase canonical form.
  const std::string& bytes() const { return bytes_; }  // 16 raw bytes.

  bool operator==(const SessionId& o) const { return bytes_ == o.bytes_; }

 private:
  SessionId() = default;
  std::string text_;
  std::string bytes_;
};

// Fills `out` with cryptographically random bytes (getrandom(2)).
void RandomBytes(void* out, size_t len);

}  // namespace chatllm
