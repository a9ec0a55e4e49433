-- 003_message_meta: per-message metadata (JSON): the request id that wrote
-- it and, for replies, the model, provider, token usage, latency and finish
-- reason. chat_append_v2 is chat_append_fenced with the metadata; the older
-- functions stay for binaries that do not know it.

ALTER TABLE messages ADD COLUMN IF NOT EXISTS meta TEXT NULL;

DELIMITER //

CREATE OR REPLACE FUNCTION chat_append_v2(
  p_session  BINARY(16),
  p_role     VARCHAR(16),
  p_content  MEDIUMTEXT,
  p_at       DATETIME(6),
  p_reply_to BIGINT,
  p_epoch    BIGINT,
  p_meta     TEXT
) RETURNS BIGINT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  UPDATE sessions
     SET message_count = LAST_INSERT_ID(message_count + 1),
         updated_at = GREATEST(updated_at, p_at)
   WHERE session_id = p_session AND state = 'active'
     AND p_epoch >= (SELECT epoch FROM shard_fence WHERE id = 1);
  IF ROW_COUNT() = 0 THEN
    IF p_epoch < (SELECT epoch FROM shard_fence WHERE id = 1) THEN
      RETURN -3;
    END IF;
    RETURN chat_placement(p_session);
  END IF;
  INSERT INTO messages (session_id, seq, role, content, reply_to, created_at, meta)
  VALUES (p_session, LAST_INSERT_ID(), p_role, p_content, NULLIF(p_reply_to, 0), p_at, NULLIF(p_meta, ''));
  RETURN LAST_INSERT_ID();
END //

DELIMITER ;
