-- 004_session_model: a session's model and system prompt, set at creation,
-- and what makes a retried turn not store its user message twice: the digest
-- of the session's last message while it is a user message still waiting for
-- its answer (NULL once anything else is appended).

ALTER TABLE sessions
  ADD COLUMN IF NOT EXISTS model VARCHAR(128) NULL,
  ADD COLUMN IF NOT EXISTS system_prompt MEDIUMTEXT NULL,
  ADD COLUMN IF NOT EXISTS last_user_digest BINARY(16) NULL;

DELIMITER //

-- As chat_create_session_fenced, with the model and system prompt.
CREATE OR REPLACE FUNCTION chat_create_session_v2(
  p_session  BINARY(16),
  p_title    VARCHAR(1000),
  p_metadata TEXT,
  p_at       DATETIME(6),
  p_epoch    BIGINT,
  p_model    VARCHAR(128),
  p_system   MEDIUMTEXT
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
  INSERT INTO sessions (session_id, title, metadata, message_count, created_at, updated_at, model, system_prompt)
  VALUES (p_session, p_title, p_metadata, 0, p_at, p_at, p_model, p_system);
  RETURN 1;
END //

-- As chat_append_v2, plus the retry rule: a user message (p_digest not NULL)
-- whose digest equals the session's last_user_digest is the same turn sent
-- again; it is not stored, and the function returns 2^40 + the seq it
-- already has. The check costs nothing on the common path: it is a
-- condition of the UPDATE, and only a refused UPDATE looks further.
-- Returns: seq > 0 stored; 2^40 + seq a retry; 0, -1, -2, -3 as chat_placement
-- and the fence.
CREATE OR REPLACE FUNCTION chat_append_v3(
  p_session  BINARY(16),
  p_role     VARCHAR(16),
  p_content  MEDIUMTEXT,
  p_at       DATETIME(6),
  p_reply_to BIGINT,
  p_epoch    BIGINT,
  p_meta     TEXT,
  p_digest   BINARY(16)
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
   WHERE session_id = p_session AND state = 'active'
     AND p_epoch >= (SELECT epoch FROM shard_fence WHERE id = 1)
     AND (p_digest IS NULL OR last_user_digest IS NULL OR last_user_digest <> p_digest);
  IF ROW_COUNT() = 0 THEN
    IF p_epoch < (SELECT epoch FROM shard_fence WHERE id = 1) THEN
      RETURN -3;
    END IF;
    IF p_digest IS NOT NULL THEN
      SET v_seq = (SELECT message_count FROM sessions
                    WHERE session_id = p_session AND state = 'active' AND last_user_digest = p_digest);
      IF v_seq IS NOT NULL THEN
        RETURN 1099511627776 + v_seq;
      END IF;
    END IF;
    RETURN chat_placement(p_session);
  END IF;
  INSERT INTO messages (session_id, seq, role, content, reply_to, created_at, meta)
  VALUES (p_session, LAST_INSERT_ID(), p_role, p_content, NULLIF(p_reply_to, 0), p_at, NULLIF(p_meta, ''));
  RETURN LAST_INSERT_ID();
END //

DELIMITER ;
