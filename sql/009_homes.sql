-- 009_homes: every user's session list has one home (docs/architecture.md,
-- "Per-user data: one home per user").
--
-- A home is a placement unit like a session: a row in `sessions` with
-- kind = 'home', whose id is derived from the user id (a UUID version that
-- no session id has; the API refuses it), placed by the ring, fenced by the
-- epochs and moved by shardctl exactly like a session. Its child rows, the
-- list entries in `session_list`, move with it as a session's messages do.
-- Every function here takes the home row's lock first (chat_home_lock):
-- entries and the count change only under it, and never while a move has
-- the home frozen.
--
-- A create writes the entry first ('pending', counted against
-- max_sessions_per_user under that lock, so the limit is exact), then the
-- session on its own shard, then confirms the entry 'live' with the
-- session's fields. A delete marks the entry 'deleting', deletes the
-- session, then removes the entry. A crash between the steps leaves an
-- entry that is not 'live': a read asks the session's shard whether it
-- exists (Vitess's consistent lookup does the same), and repairs it once it
-- is older than any create or delete can take (the app's orphan age; a
-- repair is conditional on that age, and a retried create makes its entry
-- young again, so a repair never races a request still working on it).

-- An API key is a placement unit too (kind = 'key', id derived from the key
-- id, version 12): its row is the key's only authoritative copy, so a
-- revocation is one write that no other shard can undo. A user's disable is
-- on the user's home. (Before, users and keys were copied to every shard;
-- the copies stay for the name -> id lookups of chatllm-admin and, until
-- the homes are complete, for the apps.)
ALTER TABLE sessions
  ADD COLUMN IF NOT EXISTS kind ENUM('session', 'home', 'key') NOT NULL DEFAULT 'session',
  -- A home: its entries (every state), the count max_sessions_per_user limits.
  ADD COLUMN IF NOT EXISTS listed BIGINT NOT NULL DEFAULT 0,
  -- A home: the user is disabled.
  ADD COLUMN IF NOT EXISTS disabled_at DATETIME(6) NULL,
  -- A key (its label is the title): SHA-256 of its secret, expiry, revocation.
  ADD COLUMN IF NOT EXISTS secret_sha256 BINARY(32) NULL,
  ADD COLUMN IF NOT EXISTS expires_at DATETIME(6) NULL,
  ADD COLUMN IF NOT EXISTS revoked_at DATETIME(6) NULL;

-- A home's list entries: the fields of a session that never change after
-- its create, so that the list needs no other shard.
CREATE TABLE IF NOT EXISTS session_list (
  home_id       BINARY(16)    NOT NULL,
  session_id    BINARY(16)    NOT NULL,
  created_at    DATETIME(6)   NOT NULL,
  state         ENUM('pending', 'live', 'deleting') NOT NULL,
  changed_at    DATETIME(6)   NOT NULL,
  title         VARCHAR(1000) NULL,
  metadata      TEXT          NOT NULL,
  model         VARCHAR(128)  NULL,
  system_prompt MEDIUMTEXT    NULL,
  PRIMARY KEY (home_id, session_id),
  KEY session_list_order (home_id, created_at, session_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

DELIMITER //

-- Creates the home if it does not exist (an existing one, in any state, is
-- left as it is). Fenced like a create: -3 when p_epoch is stale.
CREATE OR REPLACE FUNCTION chat_home_create(
  p_home  BINARY(16),
  p_user  BINARY(16),
  p_at    DATETIME(6),
  p_epoch BIGINT
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
  INSERT IGNORE INTO sessions (session_id, kind, user_id, title, metadata, message_count, listed, created_at,
                               updated_at, state)
  VALUES (p_home, 'home', p_user, NULL, '{}', 0, 0, p_at, p_at, 'active');
  RETURN 1;
END //

-- The home row, locked, if it is active here: its placement code otherwise
-- (0 absent, -1 frozen by a move, -2 moved, -3 stale map).
CREATE OR REPLACE FUNCTION chat_home_lock(p_home BINARY(16), p_user BINARY(16), p_epoch BIGINT) RETURNS INT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_state VARCHAR(16) DEFAULT NULL;
  DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_state = NULL;
  IF p_epoch < (SELECT epoch FROM shard_fence WHERE id = 1) THEN
    RETURN -3;
  END IF;
  SELECT state INTO v_state FROM sessions
   WHERE session_id = p_home AND kind = 'home' AND user_id <=> p_user FOR UPDATE;
  RETURN CASE v_state WHEN 'active' THEN 1 WHEN 'moving' THEN -1 WHEN 'moved' THEN -2 ELSE 0 END;
END //

-- Step 1 of a create: the entry, 'pending', counted. Returns 1 (added),
-- 2 (already listed: a retry of the same create; not counted again), -4
-- (the user has p_max entries; 0: no limit), or a placement code.
CREATE OR REPLACE FUNCTION chat_home_add(
  p_home     BINARY(16),
  p_user     BINARY(16),
  p_session  BINARY(16),
  p_created  DATETIME(6),
  p_title    VARCHAR(1000),
  p_metadata TEXT,
  p_model    VARCHAR(128),
  p_system   MEDIUMTEXT,
  p_max      BIGINT,
  p_epoch    BIGINT
) RETURNS INT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_code INT;
  SET v_code = chat_home_lock(p_home, p_user, p_epoch);
  IF v_code <> 1 THEN
    RETURN v_code;
  END IF;
  IF EXISTS (SELECT 1 FROM session_list WHERE home_id = p_home AND session_id = p_session) THEN
    -- A retry of the same create: its entry is young again (a repair
    -- leaves alone what a request may still be working on).
    UPDATE session_list SET changed_at = UTC_TIMESTAMP(6)
     WHERE home_id = p_home AND session_id = p_session AND state <> 'live';
    RETURN 2;
  END IF;
  IF p_max > 0 AND (SELECT listed FROM sessions WHERE session_id = p_home) >= p_max THEN
    RETURN -4;
  END IF;
  INSERT INTO session_list (home_id, session_id, created_at, state, changed_at, title, metadata, model,
                            system_prompt)
  VALUES (p_home, p_session, p_created, 'pending', UTC_TIMESTAMP(6), p_title, p_metadata, p_model, p_system);
  UPDATE sessions SET listed = listed + 1 WHERE session_id = p_home;
  RETURN 1;
END //

-- Sets an entry's state, only from p_from (any state when NULL) and only
-- if it was last changed at least p_min_age seconds ago (a repair: 0
-- otherwise). Returns 1 (set, or already so), 3 (no such entry in that
-- state and age), or a placement code.
CREATE OR REPLACE FUNCTION chat_home_set(
  p_home    BINARY(16),
  p_user    BINARY(16),
  p_session BINARY(16),
  p_from    VARCHAR(16),
  p_to      VARCHAR(16),
  p_min_age INT,
  p_epoch   BIGINT
) RETURNS INT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_code INT;
  SET v_code = chat_home_lock(p_home, p_user, p_epoch);
  IF v_code <> 1 THEN
    RETURN v_code;
  END IF;
  UPDATE session_list SET state = p_to, changed_at = UTC_TIMESTAMP(6)
   WHERE home_id = p_home AND session_id = p_session AND (p_from IS NULL OR state = p_from)
     AND changed_at <= UTC_TIMESTAMP(6) - INTERVAL p_min_age SECOND;
  RETURN IF(ROW_COUNT() = 1 OR (p_min_age = 0 AND EXISTS (SELECT 1 FROM session_list WHERE home_id = p_home
                                                              AND session_id = p_session AND state = p_to)), 1, 3);
END //

-- Removes an entry (only in state p_from, or in any state when NULL; only
-- if last changed at least p_min_age seconds ago) and uncounts it. Returns
-- 1 (removed), 3 (no such entry in that state and age), or a placement code.
CREATE OR REPLACE FUNCTION chat_home_remove(
  p_home    BINARY(16),
  p_user    BINARY(16),
  p_session BINARY(16),
  p_from    VARCHAR(16),
  p_min_age INT,
  p_epoch   BIGINT
) RETURNS INT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_code INT;
  SET v_code = chat_home_lock(p_home, p_user, p_epoch);
  IF v_code <> 1 THEN
    RETURN v_code;
  END IF;
  DELETE FROM session_list WHERE home_id = p_home AND session_id = p_session AND (p_from IS NULL OR state = p_from)
     AND changed_at <= UTC_TIMESTAMP(6) - INTERVAL p_min_age SECOND;
  IF ROW_COUNT() = 0 THEN
    RETURN 3;
  END IF;
  UPDATE sessions SET listed = listed - 1 WHERE session_id = p_home;
  RETURN 1;
END //

-- The last step of a create (p_from NULL), and the repair of a 'pending'
-- entry whose session was found (p_from 'pending'): the entry 'live', with
-- the session's own fields. With p_from NULL an entry in any state is
-- confirmed, and a missing one inserted and counted (the session exists,
-- whatever the count says: a repair may have removed the entry of a create
-- that took longer than the orphan age); with p_from set, only an entry in
-- that state. Returns 1 (confirmed), 3 (no such entry), or a placement code.
CREATE OR REPLACE FUNCTION chat_home_confirm(
  p_home     BINARY(16),
  p_user     BINARY(16),
  p_session  BINARY(16),
  p_created  DATETIME(6),
  p_title    VARCHAR(1000),
  p_metadata TEXT,
  p_model    VARCHAR(128),
  p_system   MEDIUMTEXT,
  p_from     VARCHAR(16),
  p_epoch    BIGINT
) RETURNS INT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_code INT;
  SET v_code = chat_home_lock(p_home, p_user, p_epoch);
  IF v_code <> 1 THEN
    RETURN v_code;
  END IF;
  IF EXISTS (SELECT 1 FROM session_list WHERE home_id = p_home AND session_id = p_session
                AND (p_from IS NULL OR state = p_from)) THEN
    UPDATE session_list
       SET state = 'live', changed_at = UTC_TIMESTAMP(6), created_at = p_created, title = p_title,
           metadata = p_metadata, model = p_model, system_prompt = p_system
     WHERE home_id = p_home AND session_id = p_session;
    RETURN 1;
  END IF;
  IF p_from IS NOT NULL OR EXISTS (SELECT 1 FROM session_list WHERE home_id = p_home AND session_id = p_session) THEN
    RETURN 3;
  END IF;
  INSERT INTO session_list (home_id, session_id, created_at, state, changed_at, title, metadata, model, system_prompt)
  VALUES (p_home, p_session, p_created, 'live', UTC_TIMESTAMP(6), p_title, p_metadata, p_model, p_system);
  UPDATE sessions SET listed = listed + 1 WHERE session_id = p_home;
  RETURN 1;
END //

-- A new key's unit, on its owner under the newest map (-3: p_epoch is
-- stale). Its metadata names the key id (chatllm-admin lists keys by it).
CREATE OR REPLACE FUNCTION chat_key_create(
  p_unit    BINARY(16),
  p_key     BINARY(8),
  p_user    BINARY(16),
  p_secret  BINARY(32),
  p_label   VARCHAR(64),
  p_expires DATETIME(6),
  p_at      DATETIME(6),
  p_epoch   BIGINT
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
  INSERT INTO sessions (session_id, kind, user_id, title, metadata, message_count, created_at, updated_at, state,
                        secret_sha256, expires_at)
  VALUES (p_unit, 'key', p_user, p_label, CONCAT('{"key_id":"', LOWER(HEX(p_key)), '"}'), 0, p_at, p_at, 'active',
          p_secret, p_expires);
  RETURN 1;
END //

-- Revokes a key (the earliest revocation stays). Returns 1, or a placement code.
CREATE OR REPLACE FUNCTION chat_key_revoke(p_unit BINARY(16), p_at DATETIME(6), p_epoch BIGINT) RETURNS INT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_state VARCHAR(16) DEFAULT NULL;
  DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_state = NULL;
  IF p_epoch < (SELECT epoch FROM shard_fence WHERE id = 1) THEN
    RETURN -3;
  END IF;
  SELECT state INTO v_state FROM sessions WHERE session_id = p_unit AND kind = 'key' FOR UPDATE;
  IF v_state = 'active' THEN
    UPDATE sessions SET revoked_at = COALESCE(revoked_at, p_at), updated_at = GREATEST(updated_at, p_at)
     WHERE session_id = p_unit;
    RETURN 1;
  END IF;
  RETURN CASE v_state WHEN 'moving' THEN -1 WHEN 'moved' THEN -2 ELSE 0 END;
END //

-- Disables (p_disabled 1) or enables the user whose home this is. Returns
-- 1, or a placement code.
CREATE OR REPLACE FUNCTION chat_home_disable(
  p_home     BINARY(16),
  p_user     BINARY(16),
  p_disabled INT,
  p_at       DATETIME(6),
  p_epoch    BIGINT
) RETURNS INT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_code INT;
  SET v_code = chat_home_lock(p_home, p_user, p_epoch);
  IF v_code <> 1 THEN
    RETURN v_code;
  END IF;
  UPDATE sessions SET disabled_at = IF(p_disabled = 1, COALESCE(disabled_at, p_at), NULL) WHERE session_id = p_home;
  RETURN 1;
END //

DELIMITER ;
