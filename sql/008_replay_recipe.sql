-- 008_replay_recipe: a keyed turn's answer is rendered outside its
-- transaction (docs/architecture.md, "A turn").
--
-- Until 007 the answer's transaction stored the whole response body with
-- its idempotency key, so the body had to be built while the session row
-- was locked. From 008 the key keeps what the response is made of: the
-- status, and in `response` a recipe naming the presenter and the two
-- messages, {"recipe":"openai","user_seq":U,"answer_seq":A} (whole in
-- itself, so that a copy of the row which lost a column still replays); a
-- replay reads the two messages and renders them with the same presenter,
-- so the bytes match the first answer's. The answer_seq column (A again)
-- marks the row as a recipe for the SQL below. Rows completed before 008
-- keep and replay their stored body.
--
-- Rolling updates: a schema-7 binary would replay a recipe as if it were a
-- body. chat_turn_begin, which it calls, now answers "still running" (-11:
-- a 409 with Retry-After) for a key completed with a recipe, and schema-8
-- binaries call chat_turn_begin_v2, which is 007's function plus clearing
-- answer_seq when an expired key is reused. So a keyed retry that lands on
-- an old binary mid-upgrade is asked to retry, never answered wrongly.
--
-- Superseded functions go (docs/operations.md, "Stored functions"): a
-- function is dropped by the first migration after which neither the
-- current binary nor the one before it (schema 7, the rolling-update
-- window) calls it. Schema 7 calls chat_append_v5, chat_create_session_v3,
-- chat_delete_session_v3, chat_placement_v2, chat_turn_begin, chat_turn_fail
-- and chat_expire_keys; chat_append_v5 also relies on chat_placement_v2;
-- chat_placement served only the functions dropped here.
-- Schema 6 binaries are outside the window from here on.

ALTER TABLE idempotency_keys
  ADD COLUMN IF NOT EXISTS answer_seq BIGINT NULL;

DROP FUNCTION IF EXISTS chat_append;
DROP FUNCTION IF EXISTS chat_append_fenced;
DROP FUNCTION IF EXISTS chat_append_v2;
DROP FUNCTION IF EXISTS chat_append_v3;
DROP FUNCTION IF EXISTS chat_append_v4;
DROP FUNCTION IF EXISTS chat_create_session_fenced;
DROP FUNCTION IF EXISTS chat_create_session_v2;
DROP FUNCTION IF EXISTS chat_delete_session;
DROP FUNCTION IF EXISTS chat_delete_session_fenced;
DROP FUNCTION IF EXISTS chat_delete_session_v2;
DROP FUNCTION IF EXISTS chat_placement;

DELIMITER //

-- The schema-7 entry point: as chat_turn_begin_v2, except that a key whose
-- answer is a recipe (completed by a schema-8 binary, which a schema-7
-- binary cannot render) reads as still running, so the old binary answers
-- 409 with Retry-After instead of replaying the recipe as a body. Created
-- before chat_turn_begin_v2 (a call is resolved when it runs): a migration
-- cut short between the two leaves old binaries' keyed turns failing until
-- it is rerun, never a shard where new binaries write recipes that old
-- ones would replay.
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
  DECLARE v_code BIGINT DEFAULT chat_turn_begin_v2(p_session, p_content, p_at, p_epoch, p_meta, p_user, p_max,
                                                   p_key_user, p_target, p_key, p_request_sha, p_ttl_s, p_lease_s,
                                                   p_attempt);
  IF v_code = -10 AND EXISTS (SELECT 1 FROM idempotency_keys
                               WHERE user_id = p_key_user AND target_sha = p_target AND idem_key = p_key
                                 AND (answer_seq IS NOT NULL OR response LIKE '{"recipe":%')) THEN
    RETURN -11;
  END IF;
  RETURN v_code;
END //

-- As chat_turn_begin of 007 (same codes), and an expired key that is used
-- again forgets its answer_seq with the rest of its old request.
CREATE OR REPLACE FUNCTION chat_turn_begin_v2(
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
           created_at = v_now, expires_at = v_now + INTERVAL p_ttl_s SECOND, user_seq = NULL, attempt = p_attempt,
           answer_seq = NULL
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

DELIMITER ;
