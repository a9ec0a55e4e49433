-- 007_acknowledged: retries are recognised by their Idempotency-Key only,
-- and a deleted session never comes back (docs/api.md, "Idempotency").
--
-- * The keyless retry rule of 004 (a user message equal to the session's
--   last, unanswered one is not stored again) is gone: it also matched a
--   turn that was still running, so two clients sending "yes" at once were
--   merged into one stored message. Two turns now share a stored user
--   message only if they carried the same Idempotency-Key.
-- * A keyed turn's key row remembers the seq of the user message it stored
--   (user_seq) and which attempt holds it (attempt: a random token). A turn
--   that fails after storing its message marks the key 'failed' instead of
--   deleting it; a retry with the same key and body takes the key over and
--   answers that same message instead of storing it again. A key whose turn
--   is still 'running' past idempotency_lease_s (its worker died) is taken
--   over the same way. Only the attempt holding the key may complete it or
--   mark it failed: an attempt that was taken over stores no answer.
-- * Deleting a session whose create carried an Idempotency-Key leaves a
--   'deleted' tombstone with the create's key row, so that a late retry of
--   that create replays its answer instead of creating the session again.
--   So does deleting a session that has just been moved here while its old
--   shard may still hold a frozen copy (arrived_from, set by shardctl
--   between activating a copy and tombstoning its source): the rerun of an
--   interrupted move must not take that copy for one still to be made.
--   A 'deleted' session is gone (placement code -5): no other shard is asked.
--   The tombstone goes when its key expires (chat_expire_keys), or when the
--   move that left it finishes; rebalance moves tombstones with the ring.
--
-- Rolling updates: binaries of schema 6 keep working against 7 for plain
-- turns, reads and moves (their functions are left as they were; both enum
-- values are appended, an instant ALTER; the new functions clear
-- last_user_digest, so their retry rule never matches a message stored by
-- a new binary). Idempotency-Keys do not carry across the versions: a keyed
-- request retried on the other version may be stored again or answered 502
-- (docs/operations.md, "Upgrading to schema 7").

ALTER TABLE idempotency_keys
  MODIFY COLUMN state ENUM('running', 'done', 'failed') NOT NULL,
  ADD COLUMN IF NOT EXISTS user_seq BIGINT NULL,
  ADD COLUMN IF NOT EXISTS attempt BIGINT NULL;

ALTER TABLE sessions
  MODIFY COLUMN state ENUM('active', 'moving', 'incoming', 'moved', 'deleted') NOT NULL DEFAULT 'active',
  ADD COLUMN IF NOT EXISTS arrived_from VARCHAR(64) NULL;

DELIMITER //

-- Placement of a session that is not active here, for the functions below:
-- the codes of sql/002_shard_map.sql plus -5, gone (deleted).
CREATE OR REPLACE FUNCTION chat_placement_v2(p_session BINARY(16)) RETURNS INT
  NOT DETERMINISTIC
  READS SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_state VARCHAR(16) DEFAULT NULL;
  DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_state = NULL;
  SELECT state INTO v_state FROM sessions WHERE session_id = p_session;
  RETURN CASE v_state WHEN 'moving' THEN -1 WHEN 'active' THEN -1 WHEN 'moved' THEN -2 WHEN 'deleted' THEN -5
                      ELSE 0 END;
END //

-- As chat_append_v4 without the keyless retry rule. Returns the new seq, or
-- a placement code (chat_placement_v2), or -4 when the session holds p_max
-- messages (0: no limit).
CREATE OR REPLACE FUNCTION chat_append_v5(
  p_session  BINARY(16),
  p_role     VARCHAR(16),
  p_content  MEDIUMTEXT,
  p_at       DATETIME(6),
  p_reply_to BIGINT,
  p_epoch    BIGINT,
  p_meta     TEXT,
  p_user     BINARY(16),
  p_max      BIGINT
) RETURNS BIGINT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  UPDATE sessions
     SET message_count = LAST_INSERT_ID(message_count + 1),
         updated_at = GREATEST(updated_at, p_at),
         last_user_digest = NULL
   WHERE session_id = p_session AND state = 'active' AND user_id <=> p_user
     AND p_epoch >= (SELECT epoch FROM shard_fence WHERE id = 1)
     AND (p_max = 0 OR message_count < p_max);
  IF ROW_COUNT() = 0 THEN
    IF p_epoch < (SELECT epoch FROM shard_fence WHERE id = 1) THEN
      RETURN -3;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM sessions WHERE session_id = p_session AND user_id <=> p_user) THEN
      RETURN 0;
    END IF;
    IF p_max > 0 AND EXISTS (SELECT 1 FROM sessions WHERE session_id = p_session AND state = 'active'
                                AND message_count >= p_max) THEN
      RETURN -4;
    END IF;
    RETURN chat_placement_v2(p_session);
  END IF;
  INSERT INTO messages (session_id, seq, role, content, reply_to, created_at, meta)
  VALUES (p_session, LAST_INSERT_ID(), p_role, p_content, NULLIF(p_reply_to, 0), p_at, NULLIF(p_meta, ''));
  RETURN LAST_INSERT_ID();
END //

-- The first transaction of a turn that carries an Idempotency-Key, in one
-- statement (one round trip, atomic under autocommit): claims the key for
-- attempt p_attempt and stores the user message, or says why not. Codes:
--   > 0                 the user message is stored at this seq; the key is
--                       'running' with user_seq = that seq
--   2^40 + seq          the key was taken over (its turn failed, or ran past
--                       p_lease_s): the user message is already stored at
--                       seq; answer it, do not store it again
--   0, -1, -2, -3, -5   placement, as chat_placement_v2 (nothing stored)
--   -4                  the session is full (nothing stored)
--   -10                 the key's request is done: replay its response
--   -11                 the key's request is still running
--   -12                 the key was used with a different request
-- The session row is locked first: what keeps a claim from landing on a
-- session that is being moved is the same row lock and state check that
-- keep an append from doing so.
CREATE OR REPLACE FUNCTION chat_turn_begin(
  p_session     BINARY(16),
  p_content     MEDIUMTEXT,
  p_at          DATETIME(6),
  p_epoch       BIGINT,
  p_meta        TEXT,
  p_user        BINARY(16),
  p_max         BIGINT,
  p_key_user    BINARY(16),
  p_target      BINARY(16),
  p_key         VARBINARY(255),
  p_request_sha BINARY(32),
  p_ttl_s       INT,
  p_lease_s     INT,
  p_attempt     BIGINT
) RETURNS BIGINT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_state VARCHAR(16) DEFAULT NULL;
  DECLARE v_count BIGINT DEFAULT 0;
  DECLARE v_key_state VARCHAR(16) DEFAULT NULL;
  DECLARE v_sha BINARY(32) DEFAULT NULL;
  DECLARE v_user_seq BIGINT DEFAULT NULL;
  DECLARE v_age BIGINT DEFAULT 0;
  DECLARE v_expired INT DEFAULT 0;
  DECLARE v_seq BIGINT;
  -- Key times are the shard's clock, like every key written before 007.
  DECLARE v_now DATETIME(6) DEFAULT UTC_TIMESTAMP(6);
  DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_state = NULL;
  IF p_epoch < (SELECT epoch FROM shard_fence WHERE id = 1) THEN
    RETURN -3;
  END IF;
  SELECT state, message_count INTO v_state, v_count FROM sessions
   WHERE session_id = p_session AND user_id <=> p_user FOR UPDATE;
  IF v_state IS NULL OR v_state = 'incoming' THEN
    RETURN 0;
  END IF;
  IF v_state = 'deleted' THEN
    RETURN -5;
  END IF;
  IF v_state = 'moving' THEN
    RETURN -1;
  END IF;
  IF v_state = 'moved' THEN
    RETURN -2;
  END IF;
  INSERT IGNORE INTO idempotency_keys (user_id, target_sha, idem_key, session_id, request_sha, state, status,
                                       response, created_at, expires_at, user_seq, attempt)
  VALUES (p_key_user, p_target, p_key, p_session, p_request_sha, 'running', 0, NULL, v_now,
          v_now + INTERVAL p_ttl_s SECOND, NULL, p_attempt);
  IF ROW_COUNT() = 0 THEN
    SELECT request_sha, state, user_seq, TIMESTAMPDIFF(SECOND, created_at, v_now), expires_at < v_now
      INTO v_sha, v_key_state, v_user_seq, v_age, v_expired
      FROM idempotency_keys WHERE user_id = p_key_user AND target_sha = p_target AND idem_key = p_key FOR UPDATE;
    IF v_expired = 0 AND v_sha <> p_request_sha THEN
      RETURN -12;
    END IF;
    IF v_expired = 0 AND v_key_state = 'done' THEN
      RETURN -10;
    END IF;
    IF v_expired = 0 AND v_key_state = 'running' AND v_age <= p_lease_s THEN
      RETURN -11;
    END IF;
    IF v_expired = 0 AND v_user_seq IS NOT NULL THEN
      -- Failed, or running past its lease: this attempt takes the turn over
      -- (the one it replaces can no longer complete it), and the key is kept
      -- a whole TTL from now.
      UPDATE idempotency_keys
         SET state = 'running', created_at = v_now, attempt = p_attempt,
             expires_at = GREATEST(expires_at, v_now + INTERVAL p_ttl_s SECOND)
       WHERE user_id = p_key_user AND target_sha = p_target AND idem_key = p_key;
      RETURN 1099511627776 + v_user_seq;
    END IF;
    -- Expired (or left by an older binary without user_seq): a new request.
    UPDATE idempotency_keys
       SET session_id = p_session, request_sha = p_request_sha, state = 'running', status = 0, response = NULL,
           created_at = v_now, expires_at = v_now + INTERVAL p_ttl_s SECOND, user_seq = NULL, attempt = p_attempt
     WHERE user_id = p_key_user AND target_sha = p_target AND idem_key = p_key;
  END IF;
  IF p_max > 0 AND v_count >= p_max THEN
    -- Nothing may be stored: the key claimed above goes again.
    DELETE FROM idempotency_keys WHERE user_id = p_key_user AND target_sha = p_target AND idem_key = p_key;
    RETURN -4;
  END IF;
  SET v_seq = v_count + 1;
  UPDATE sessions SET message_count = v_seq, updated_at = GREATEST(updated_at, p_at), last_user_digest = NULL
   WHERE session_id = p_session;
  INSERT INTO messages (session_id, seq, role, content, reply_to, created_at, meta)
  VALUES (p_session, v_seq, 'user', p_content, NULL, p_at, NULLIF(p_meta, ''));
  UPDATE idempotency_keys SET user_seq = v_seq
   WHERE user_id = p_key_user AND target_sha = p_target AND idem_key = p_key;
  RETURN v_seq;
END //

-- After a keyed turn stored its user message and failed: the key becomes
-- 'failed', so that a retry takes it over (chat_turn_begin), if attempt
-- p_attempt still holds it. Under the session row lock, like every write to
-- a session's rows, so that it cannot slip past a move that is copying
-- them. Returns 1, or a placement code.
CREATE OR REPLACE FUNCTION chat_turn_fail(
  p_session  BINARY(16),
  p_epoch    BIGINT,
  p_user     BINARY(16),
  p_key_user BINARY(16),
  p_target   BINARY(16),
  p_key      VARBINARY(255),
  p_attempt  BIGINT
) RETURNS INT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_state VARCHAR(16) DEFAULT NULL;
  DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_state = NULL;
  IF p_epoch < (SELECT epoch FROM shard_fence WHERE id = 1) THEN
    RETURN -3;
  END IF;
  SELECT state INTO v_state FROM sessions WHERE session_id = p_session AND user_id <=> p_user FOR UPDATE;
  IF v_state IS NULL OR v_state = 'incoming' THEN
    RETURN 0;
  END IF;
  IF v_state = 'deleted' THEN
    RETURN -5;
  END IF;
  IF v_state = 'moving' THEN
    RETURN -1;
  END IF;
  IF v_state = 'moved' THEN
    RETURN -2;
  END IF;
  UPDATE idempotency_keys SET state = 'failed'
   WHERE user_id = p_key_user AND target_sha = p_target AND idem_key = p_key AND state = 'running'
     AND attempt = p_attempt;
  RETURN 1;
END //

-- Deletes a session for its owner (1), or answers a placement code. Its
-- messages and idempotency keys go. It stays as a 'deleted' tombstone when
-- its create carried a key (a row with target p_create_target: kept, so a
-- late retry of the create is replayed instead of creating the session
-- again) or when it has just moved here and its old shard may still hold a
-- frozen copy (arrived_from: see the header).
CREATE OR REPLACE FUNCTION chat_delete_session_v3(
  p_session       BINARY(16),
  p_epoch         BIGINT,
  p_user          BINARY(16),
  p_create_target BINARY(16),
  p_at            DATETIME(6)
) RETURNS INT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_state VARCHAR(16) DEFAULT NULL;
  DECLARE v_arrived VARCHAR(64) DEFAULT NULL;
  DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_state = NULL;
  IF p_epoch < (SELECT epoch FROM shard_fence WHERE id = 1) THEN
    RETURN -3;
  END IF;
  SELECT state, arrived_from INTO v_state, v_arrived FROM sessions
   WHERE session_id = p_session AND user_id <=> p_user FOR UPDATE;
  IF v_state IS NULL OR v_state = 'incoming' THEN
    RETURN 0;
  END IF;
  IF v_state = 'deleted' THEN
    RETURN -5;
  END IF;
  IF v_state = 'moving' THEN
    RETURN -1;
  END IF;
  IF v_state = 'moved' THEN
    RETURN -2;
  END IF;
  DELETE FROM messages WHERE session_id = p_session;
  DELETE FROM idempotency_keys WHERE session_id = p_session AND target_sha <> p_create_target;
  IF v_arrived IS NOT NULL OR EXISTS (SELECT 1 FROM idempotency_keys WHERE session_id = p_session) THEN
    UPDATE sessions
       SET state = 'deleted', title = NULL, metadata = '{}', message_count = 0, model = NULL, system_prompt = NULL,
           last_user_digest = NULL, updated_at = GREATEST(updated_at, p_at)
     WHERE session_id = p_session;
  ELSE
    DELETE FROM sessions WHERE session_id = p_session;
  END IF;
  RETURN 1;
END //

-- Forgets up to 200 expired idempotency keys, oldest first, and the
-- 'deleted' tombstones that were kept only for them (both bounded by the
-- idempotency_expiry index). Returns how many keys went.
CREATE OR REPLACE FUNCTION chat_expire_keys() RETURNS INT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_now DATETIME(6) DEFAULT UTC_TIMESTAMP(6);
  DELETE FROM sessions
   WHERE state = 'deleted' AND arrived_from IS NULL
     AND session_id IN (SELECT session_id FROM (SELECT session_id FROM idempotency_keys WHERE expires_at < v_now
                                                 ORDER BY expires_at LIMIT 200) AS expiring);
  DELETE FROM idempotency_keys WHERE expires_at < v_now ORDER BY expires_at LIMIT 200;
  RETURN ROW_COUNT();
END //

DELIMITER ;
