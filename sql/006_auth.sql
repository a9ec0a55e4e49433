-- 006_auth: users and API keys, session ownership, idempotency keys, and
-- the per-session message limit (docs/security.md).
--
-- users and api_keys are copied to every shard (chatllm-admin writes each
-- shard; shardctl add-shard copies them to a new one): a key is checked on
-- the shard its id hashes to, and on any other when that one is down, so no
-- single database is on every request's path.

CREATE TABLE IF NOT EXISTS users (
  user_id     BINARY(16)  NOT NULL,
  name        VARCHAR(64) NOT NULL,
  created_at  DATETIME(6) NOT NULL,
  disabled_at DATETIME(6) NULL,
  PRIMARY KEY (user_id),
  UNIQUE KEY users_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- A key is "ck_" + hex(key_id) + "_" + base64url(secret); only SHA-256 of the
-- 256-bit secret is stored (a random secret needs no slow hash).
CREATE TABLE IF NOT EXISTS api_keys (
  key_id        BINARY(8)   NOT NULL,
  user_id       BINARY(16)  NOT NULL,
  secret_sha256 BINARY(32)  NOT NULL,
  label         VARCHAR(64) NOT NULL DEFAULT '',
  created_at    DATETIME(6) NOT NULL,
  expires_at    DATETIME(6) NULL,
  revoked_at    DATETIME(6) NULL,
  PRIMARY KEY (key_id),
  KEY api_keys_user (user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The owner. NULL: created without authentication ([auth] required = false),
-- visible only to requests made without it.
ALTER TABLE sessions
  ADD COLUMN IF NOT EXISTS user_id BINARY(16) NULL,
  ADD INDEX IF NOT EXISTS sessions_by_user (user_id, created_at, session_id);

-- Idempotency-Key: one row per (user, request target, key), written in the
-- same transaction as the write it protects, on the shard of the session it
-- belongs to (and moved with it).
CREATE TABLE IF NOT EXISTS idempotency_keys (
  user_id     BINARY(16)     NOT NULL,
  target_sha  BINARY(16)     NOT NULL,
  idem_key    VARBINARY(255) NOT NULL,
  session_id  BINARY(16)     NOT NULL,
  request_sha BINARY(32)     NOT NULL,
  state       ENUM('running', 'done') NOT NULL,
  status      SMALLINT       NOT NULL DEFAULT 0,
  response    MEDIUMTEXT     NULL,
  created_at  DATETIME(6)    NOT NULL,
  expires_at  DATETIME(6)    NOT NULL,
  PRIMARY KEY (user_id, target_sha, idem_key),
  KEY idempotency_session (session_id),
  KEY idempotency_expiry (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

DELIMITER //

-- As chat_create_session_v2, with the owner.
CREATE OR REPLACE FUNCTION chat_create_session_v3(
  p_session  BINARY(16),
  p_title    VARCHAR(1000),
  p_metadata TEXT,
  p_at       DATETIME(6),
  p_epoch    BIGINT,
  p_model    VARCHAR(128),
  p_system   MEDIUMTEXT,
  p_user     BINARY(16)
) RETURNS INT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_fence BIGINT;
  SELECT epoch INTO v_fence FROM shard_fence WHERE id = 1 LOCK IN SHARE MODE;
  IF p_epoch < v_fence THEN
    RETURN -3;
  END IF;
  INSERT INTO sessions (session_id, title, metadata, message_count, created_at, updated_at, model, system_prompt,
                        user_id)
  VALUES (p_session, p_title, p_metadata, 0, p_at, p_at, p_model, p_system, p_user);
  RETURN 1;
END //

-- As chat_append_v3, for the session's owner only (p_user, NULL for none:
-- another user's session answers 0, exactly like a missing one), and at
-- most p_max messages per session (-4 when full; 0: no limit).
CREATE OR REPLACE FUNCTION chat_append_v4(
  p_session  BINARY(16),
  p_role     VARCHAR(16),
  p_content  MEDIUMTEXT,
  p_at       DATETIME(6),
  p_reply_to BIGINT,
  p_epoch    BIGINT,
  p_meta     TEXT,
  p_digest   BINARY(16),
  p_user     BINARY(16),
  p_max      BIGINT
) RETURNS BIGINT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_seq BIGINT DEFAULT NULL;
  UPDATE sessions
     SET message_count = LAST_INSERT_ID(message_count + 1),
         updated_at = GREATEST(updated_at, p_at),
         last_user_digest = p_digest
   WHERE session_id = p_session AND state = 'active' AND user_id <=> p_user
     AND p_epoch >= (SELECT epoch FROM shard_fence WHERE id = 1)
     AND (p_digest IS NULL OR last_user_digest IS NULL OR last_user_digest <> p_digest)
     AND (p_max = 0 OR message_count < p_max);
  IF ROW_COUNT() = 0 THEN
    IF p_epoch < (SELECT epoch FROM shard_fence WHERE id = 1) THEN
      RETURN -3;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM sessions WHERE session_id = p_session AND user_id <=> p_user) THEN
      RETURN 0;
    END IF;
    IF p_digest IS NOT NULL THEN
      SET v_seq = (SELECT message_count FROM sessions
                    WHERE session_id = p_session AND state = 'active' AND last_user_digest = p_digest);
      IF v_seq IS NOT NULL THEN
        RETURN 1099511627776 + v_seq;
      END IF;
    END IF;
    IF p_max > 0 AND EXISTS (SELECT 1 FROM sessions WHERE session_id = p_session AND state = 'active'
                                AND message_count >= p_max) THEN
      RETURN -4;
    END IF;
    RETURN chat_placement(p_session);
  END IF;
  INSERT INTO messages (session_id, seq, role, content, reply_to, created_at, meta)
  VALUES (p_session, LAST_INSERT_ID(), p_role, p_content, NULLIF(p_reply_to, 0), p_at, NULLIF(p_meta, ''));
  RETURN LAST_INSERT_ID();
END //

-- As chat_delete_session_fenced, for the owner only; its idempotency keys go too.
CREATE OR REPLACE FUNCTION chat_delete_session_v2(p_session BINARY(16), p_epoch BIGINT, p_user BINARY(16))
  RETURNS INT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DELETE FROM sessions
   WHERE session_id = p_session AND state = 'active' AND user_id <=> p_user
     AND p_epoch >= (SELECT epoch FROM shard_fence WHERE id = 1);
  IF ROW_COUNT() = 0 THEN
    IF p_epoch < (SELECT epoch FROM shard_fence WHERE id = 1) THEN
      RETURN -3;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM sessions WHERE session_id = p_session AND user_id <=> p_user) THEN
      RETURN 0;
    END IF;
    RETURN chat_placement(p_session);
  END IF;
  DELETE FROM messages WHERE session_id = p_session;
  DELETE FROM idempotency_keys WHERE session_id = p_session;
  RETURN 1;
END //

DELIMITER ;
