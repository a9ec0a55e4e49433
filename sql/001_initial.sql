-- 001_initial: sessions, their messages, and the functions that write them.
--
-- Every per-session table leads with the session id, so a session's rows
-- live (and would move) together. Ids are the 16 raw bytes of the session's
-- UUID; times are UTC with microseconds, supplied by the app.
--
-- Writes go through stored functions: one `SELECT fn(...)` is one round trip
-- and, under autocommit, one transaction. The function takes the session row
-- lock first, so concurrent writers to one session queue on that lock and
-- seq stays dense; writers to different sessions never wait for each other.

CREATE TABLE IF NOT EXISTS sessions (
  session_id    BINARY(16)    NOT NULL,
  title         VARCHAR(1000) NULL,
  metadata      TEXT          NOT NULL,
  message_count BIGINT        NOT NULL DEFAULT 0,
  created_at    DATETIME(6)   NOT NULL,
  updated_at    DATETIME(6)   NOT NULL,
  PRIMARY KEY (session_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS messages (
  session_id BINARY(16)  NOT NULL,
  seq        BIGINT      NOT NULL,
  role       VARCHAR(16) NOT NULL,
  content    MEDIUMTEXT  NOT NULL,
  reply_to   BIGINT      NULL,
  created_at DATETIME(6) NOT NULL,
  PRIMARY KEY (session_id, seq)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

DELIMITER //

-- Appends one message and returns its seq, or 0 if the session does not
-- exist. Invariant: for every session, messages.seq is exactly
-- 1..sessions.message_count. It holds because the UPDATE takes the session
-- row's exclusive lock and bumps the counter, and the INSERT uses the bumped
-- value, in one transaction: a concurrent append waits on the row lock, and a
-- failure anywhere rolls the whole statement back. LAST_INSERT_ID(expr)
-- carries the new value from the UPDATE to the INSERT without a third
-- statement; a stored function restores the caller's LAST_INSERT_ID on return.
CREATE OR REPLACE FUNCTION chat_append(
  p_session  BINARY(16),
  p_role     VARCHAR(16),
  p_content  MEDIUMTEXT,
  p_at       DATETIME(6),
  p_reply_to BIGINT
) RETURNS BIGINT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  UPDATE sessions
     SET message_count = LAST_INSERT_ID(message_count + 1),
         updated_at = GREATEST(updated_at, p_at)
   WHERE session_id = p_session;
  IF ROW_COUNT() = 0 THEN
    RETURN 0;
  END IF;
  INSERT INTO messages (session_id, seq, role, content, reply_to, created_at)
  VALUES (p_session, LAST_INSERT_ID(), p_role, p_content, NULLIF(p_reply_to, 0), p_at);
  RETURN LAST_INSERT_ID();
END //

-- Deletes a session and all its messages in one transaction; returns 1 if it
-- existed. Locks the session row before the messages, the same order as
-- chat_append, so the two cannot deadlock.
CREATE OR REPLACE FUNCTION chat_delete_session(p_session BINARY(16)) RETURNS INT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_found INT DEFAULT 0;
  DELETE FROM sessions WHERE session_id = p_session;
  SET v_found = ROW_COUNT();
  DELETE FROM messages WHERE session_id = p_session;
  RETURN v_found;
END //

DELIMITER ;
