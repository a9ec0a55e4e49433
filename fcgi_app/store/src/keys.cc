// API keys as placement units (sql/009_homes.sql): a key's row is on the
// shard the ring gives its unit id, the only authoritative copy; whether
// its user is disabled is on the user's home. A lookup reads the two, like
// any session, wherever they are moving.

#include "base/ids.h"
#include "base/time_util.h"
#include "routing.h"
#include "store/sharded_store.h"

namespace chatllm {

std::optional<KeyRecord> ShardedStore::LookupApiKey(const std::string& key_id) {
  MaybeRefresh();
  if (!map_->homes()) {
    // Before the homes are complete the copies are what chatllm-admin
    // writes for every key; a key made since (by a chatllm-admin that read
    // a newer map than this worker's) has only its unit.
    std::optional<KeyRecord> copy = LookupKeyCopies(key_id);
    if (!copy) return LookupKeyUnit(key_id);
    if (!map_->homes_written()) return copy;
    // While the homes are written (or until this worker reads the map that
    // says they are complete), a revocation or disable may be only on the
    // unit or the home: the stricter of the two answers.
    if (std::optional<KeyRecord> unit = LookupKeyUnit(key_id)) {
      copy->revoked = copy->revoked || unit->revoked;
      copy->user_disabled = copy->user_disabled || unit->user_disabled;
    }
    return copy;
  }
  return LookupKeyUnit(key_id);
}

std::optional<KeyRecord> ShardedStore::LookupKeyUnit(const std::string& key_id) {
  const SessionId unit = SessionId::KeyUnitOf(key_id);
  std::optional<KeyRecord> key = Routed<KeyRecord>(unit, true, "look up API key", [&](Prepared& p, uint64_t) {
    MysqlStatement& st = p.key_unit;
    st.BindBytes(0, unit.bytes());
    st.Execute();
    Placed<KeyRecord> out{Placement::kAbsent, {}};
    if (st.row_count() == 0) return out;
    out.placement = StatePlacement<Placement>(st.Text(0, 0));
    if (!ServesRead(out.placement)) return out;
    out.value.user_id = st.Text(0, 1);
    out.value.secret_sha256 = st.Text(0, 2);
    out.value.expires_us = st.IsNull(0, 3) ? 0 : st.DatetimeMicros(0, 3);
    out.value.revoked = st.Int64(0, 4) != 0;
    return out;
  });
  if (!key || key->revoked || key->user_id.empty()) return key;
  const SessionId home = SessionId::HomeOf(key->user_id);
  std::optional<bool> disabled = Routed<bool>(home, true, "look up the key's user", [&](Prepared& p, uint64_t) {
    MysqlStatement& st = p.home_flags;
    st.BindBytes(0, home.bytes());
    st.Execute();
    if (st.row_count() == 0) return Placed<bool>{Placement::kAbsent, false};
    return Placed<bool>{StatePlacement<Placement>(st.Text(0, 0)), st.Int64(0, 1) != 0};
  });
  key->user_disabled = disabled.value_or(false);  // No home: never disabled.
  return key;
}

void ShardedStore::CreateKeyUnit(const std::string& key_id, const UserId& user, const std::string& secret_sha256,
                                 const std::string& label, int64_t expires_us, int64_t created_us) {
  MaybeRefresh();
  const SessionId unit = SessionId::KeyUnitOf(key_id);
  CreateUnit(unit, "store the key", [&](Prepared& p, uint64_t epoch) {
    MysqlStatement& st = p.key_create;
    st.BindBytes(0, unit.bytes());
    st.BindBytes(1, key_id);
    st.BindBytes(2, user);
    st.BindBytes(3, secret_sha256);
    st.BindString(4, label);
    if (expires_us > 0)
      st.BindDatetime(5, expires_us);
    else
      st.BindNull(5);
    st.BindDatetime(6, created_us);
    st.BindInt64(7, static_cast<int64_t>(epoch));
    st.Execute();
    return st.Int64(0, 0);
  });
}

bool ShardedStore::RevokeKeyUnit(const std::string& key_id) {
  MaybeRefresh();
  const SessionId unit = SessionId::KeyUnitOf(key_id);
  const int64_t now = NowMicros();
  return Routed<bool>(unit, false, "revoke the key",
                      [&](Prepared& p, uint64_t epoch) {
                        MysqlStatement& st = p.key_revoke;
                        st.BindBytes(0, unit.bytes());
                        st.BindDatetime(1, now);
                        st.BindInt64(2, static_cast<int64_t>(epoch));
                        st.Execute();
                        return Placed<bool>{CodePlacement<Placement>(st.Int64(0, 0)), true};
                      })
      .has_value();
}

void ShardedStore::SetUserDisabled(const UserId& user, bool disabled) {
  MaybeRefresh();
  const SessionId home = SessionId::HomeOf(user);
  const int64_t now = NowMicros();
  HomeCall(user, disabled ? "disable the user" : "enable the user", [&](Prepared& p, uint64_t epoch) {
    MysqlStatement& st = p.home_disable;
    st.BindBytes(0, home.bytes());
    BindUser(st, 1, user);
    st.BindInt64(2, disabled ? 1 : 0);
    st.BindDatetime(3, now);
    st.BindInt64(4, static_cast<int64_t>(epoch));
    st.Execute();
    const int64_t code = st.Int64(0, 0);
    return Placed<int>{CodePlacement<Placement>(code), static_cast<int>(code)};
  });
}

}  // namespace chatllm
