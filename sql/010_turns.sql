-- 010_turns: durable turns (docs/architecture.md, "Durable turns").
--
-- A streamed turn is a row with a lifecycle on its session's shard, and the
-- text it produces is stored as it comes, in numbered events, so that a
-- client that lost the stream reads it again from any instance, and a turn
-- outlives the client that asked for it.
--
--   in_progress -> completed | failed | cancelled    (its producer says)
--   in_progress -> incomplete                        (its lease ran out)
--
-- The worker that produces a turn holds it by a random token (`producer`)
-- and a lease it renews with every write; every write of a producer names
-- the token and requires the turn in_progress, so a producer whose lease
-- was given up (it was presumed dead and the turn marked incomplete) can
-- write nothing more: not an event, not the answer. Every write also takes
-- the session row's lock (shared) and checks the fence, as an append does,
-- so nothing lands on a session a move has frozen: the turns and events of
-- a session move with it.

CREATE TABLE IF NOT EXISTS turns (
  session_id       BINARY(16)  NOT NULL,
  turn_id          BIGINT      NOT NULL,  -- random, positive (the API shows it as 16 hex digits)
  user_seq         BIGINT      NOT NULL,  -- the user message it answers
  state            ENUM('in_progress', 'completed', 'incomplete', 'failed', 'cancelled') NOT NULL,
  producer         BIGINT      NOT NULL,
  lease_until      DATETIME(6) NOT NULL,
  cancel_requested TINYINT     NOT NULL DEFAULT 0,
  last_event       BIGINT      NOT NULL DEFAULT 0,  -- events 1..last_event are stored
  answer_seq       BIGINT      NULL,                -- the stored answer (complete, or the partial one)
  created_at       DATETIME(6) NOT NULL,
  updated_at       DATETIME(6) NOT NULL,
  PRIMARY KEY (session_id, turn_id),
  KEY turns_expiry (updated_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row per event; `text` is the delta it carried.
CREATE TABLE IF NOT EXISTS turn_events (
  session_id BINARY(16) NOT NULL,
  turn_id    BIGINT     NOT NULL,
  seq        BIGINT     NOT NULL,
  text       MEDIUMTEXT NOT NULL,
  PRIMARY KEY (session_id, turn_id, seq)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

DELIMITER //

-- The session active here for p_user under p_epoch, its row share-locked
-- (1), or its placement code (chat_placement_v2; -3: our map is stale).
-- The share lock orders this transaction against a move's freeze, which
-- updates the row.
CREATE OR REPLACE FUNCTION chat_turn_place(p_session BINARY(16), p_user BINARY(16), p_epoch BIGINT) RETURNS INT
  NOT DETERMINISTIC
  READS SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_fence BIGINT;
  DECLARE v_state VARCHAR(16) DEFAULT NULL;
  DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_state = NULL;
  SELECT epoch INTO v_fence FROM shard_fence WHERE id = 1 LOCK IN SHARE MODE;
  IF p_epoch < v_fence THEN
    RETURN -3;
  END IF;
  SELECT state INTO v_state FROM sessions
   WHERE session_id = p_session AND kind = 'session' AND user_id <=> p_user LOCK IN SHARE MODE;
  RETURN CASE v_state WHEN 'active' THEN 1 WHEN 'moving' THEN -1 WHEN 'moved' THEN -2 WHEN 'deleted' THEN -5
                      ELSE 0 END;
END //

-- Opens a turn for the stored user message p_user_seq, held by p_producer
-- for p_lease_ms. 1, or a placement code.
CREATE OR REPLACE FUNCTION chat_turn_open(
  p_session  BINARY(16),
  p_user     BINARY(16),
  p_epoch    BIGINT,
  p_turn     BIGINT,
  p_user_seq BIGINT,
  p_producer BIGINT,
  p_lease_ms BIGINT
) RETURNS INT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_place INT DEFAULT chat_turn_place(p_session, p_user, p_epoch);
  DECLARE v_now DATETIME(6) DEFAULT UTC_TIMESTAMP(6);
  IF v_place <> 1 THEN
    RETURN v_place;
  END IF;
  INSERT INTO turns (session_id, turn_id, user_seq, state, producer, lease_until, created_at, updated_at)
  VALUES (p_session, p_turn, p_user_seq, 'in_progress', p_producer,
          v_now + INTERVAL p_lease_ms * 1000 MICROSECOND, v_now, v_now);
  RETURN 1;
END //

-- Stores events p_first.. (a JSON array of strings, in order) and renews
-- the lease. 1, or 2 when a cancel was asked for (the events are stored
-- all the same); -20 when p_producer no longer holds the turn (nothing
-- stored); or a placement code.
CREATE OR REPLACE FUNCTION chat_turn_flush(
  p_session  BINARY(16),
  p_user     BINARY(16),
  p_epoch    BIGINT,
  p_turn     BIGINT,
  p_producer BIGINT,
  p_first    BIGINT,
  p_events   LONGTEXT,
  p_lease_ms BIGINT
) RETURNS INT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_place INT DEFAULT chat_turn_place(p_session, p_user, p_epoch);
  DECLARE v_now DATETIME(6) DEFAULT UTC_TIMESTAMP(6);
  DECLARE v_state VARCHAR(16) DEFAULT NULL;
  DECLARE v_producer BIGINT;
  DECLARE v_last BIGINT;
  DECLARE v_cancel TINYINT;
  DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_state = NULL;
  IF v_place <> 1 THEN
    RETURN v_place;
  END IF;
  SELECT state, producer, last_event, cancel_requested INTO v_state, v_producer, v_last, v_cancel
    FROM turns WHERE session_id = p_session AND turn_id = p_turn FOR UPDATE;
  IF v_state IS NULL OR v_state <> 'in_progress' OR v_producer <> p_producer OR v_last <> p_first - 1 THEN
    RETURN -20;
  END IF;
  UPDATE turns
     SET last_event = p_first + JSON_LENGTH(p_events) - 1,
         lease_until = v_now + INTERVAL p_lease_ms * 1000 MICROSECOND, updated_at = v_now
   WHERE session_id = p_session AND turn_id = p_turn;
  INSERT INTO turn_events (session_id, turn_id, seq, text)
  SELECT p_session, p_turn, p_first + e.n - 1, e.text
    FROM JSON_TABLE(p_events, '$[*]' COLUMNS (n FOR ORDINALITY, text LONGTEXT PATH '$')) AS e;
  RETURN 1 + v_cancel;
END //

-- Ends a turn its producer holds: p_state ('completed', 'failed' or
-- 'cancelled'), the stored answer p_answer_seq (0: none). 1, -20 when
-- p_producer no longer holds it, or a placement code. The answer, when
-- there is one, is stored in the same transaction by the caller.
CREATE OR REPLACE FUNCTION chat_turn_close(
  p_session    BINARY(16),
  p_user       BINARY(16),
  p_epoch      BIGINT,
  p_turn       BIGINT,
  p_producer   BIGINT,
  p_state      VARCHAR(16),
  p_answer_seq BIGINT
) RETURNS INT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_place INT DEFAULT chat_turn_place(p_session, p_user, p_epoch);
  IF v_place <> 1 THEN
    RETURN v_place;
  END IF;
  UPDATE turns SET state = p_state, answer_seq = NULLIF(p_answer_seq, 0), updated_at = UTC_TIMESTAMP(6)
   WHERE session_id = p_session AND turn_id = p_turn AND producer = p_producer AND state = 'in_progress';
  RETURN IF(ROW_COUNT() = 1, 1, -20);
END //

-- A turn whose lease ran out: its producer is presumed dead. It becomes
-- 'incomplete' (every stored event kept) and its producer can write no
-- more. 1 (whether or not it had expired), or a placement code.
CREATE OR REPLACE FUNCTION chat_turn_expire(p_session BINARY(16), p_user BINARY(16), p_epoch BIGINT,
                                            p_turn BIGINT) RETURNS INT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_place INT DEFAULT chat_turn_place(p_session, p_user, p_epoch);
  IF v_place <> 1 THEN
    RETURN v_place;
  END IF;
  UPDATE turns SET state = 'incomplete', updated_at = UTC_TIMESTAMP(6)
   WHERE session_id = p_session AND turn_id = p_turn AND state = 'in_progress'
     AND lease_until < UTC_TIMESTAMP(6);
  RETURN 1;
END //

-- Asks a turn's producer to stop (it sees this with its next write and
-- stores what it has as 'cancelled'). 1 (whatever the turn's state), or a
-- placement code.
CREATE OR REPLACE FUNCTION chat_turn_cancel(p_session BINARY(16), p_user BINARY(16), p_epoch BIGINT,
                                            p_turn BIGINT) RETURNS INT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_place INT DEFAULT chat_turn_place(p_session, p_user, p_epoch);
  IF v_place <> 1 THEN
    RETURN v_place;
  END IF;
  UPDATE turns SET cancel_requested = 1
   WHERE session_id = p_session AND turn_id = p_turn AND state = 'in_progress';
  RETURN 1;
END //

-- As before (sql/007_acknowledged.sql), and the session's turns and their
-- events go with its messages.
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
  DELETE FROM turn_events WHERE session_id = p_session;
  DELETE FROM turns WHERE session_id = p_session;
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

-- Forgets up to 100 turns that ended before p_before, or whose producer's
-- lease ran out before it (a producer that died and whose turn nobody read
-- since), with their events (a stored answer stays: it is a message).
-- Every write of a turn sets updated_at and a lease after it, so both are
-- found along turns_expiry: a range that is empty but for what is due.
-- Returns how many turns went.
CREATE OR REPLACE FUNCTION chat_expire_turns(p_before DATETIME(6)) RETURNS INT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_done INT DEFAULT 0;
  DECLARE v_session BINARY(16);
  DECLARE v_turn BIGINT;
  DECLARE v_end INT DEFAULT 0;
  DECLARE old CURSOR FOR
    SELECT session_id, turn_id FROM turns
     WHERE updated_at < p_before AND (state <> 'in_progress' OR lease_until < p_before)
     ORDER BY updated_at LIMIT 100;
  DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_end = 1;
  OPEN old;
  expire: LOOP
    FETCH old INTO v_session, v_turn;
    IF v_end THEN
      LEAVE expire;
    END IF;
    -- Checked again under the row's lock: a producer that was only slow
    -- renews its lease with its next batch.
    DELETE FROM turns
     WHERE session_id = v_session AND turn_id = v_turn
       AND updated_at < p_before AND (state <> 'in_progress' OR lease_until < p_before);
    IF ROW_COUNT() > 0 THEN
      DELETE FROM turn_events WHERE session_id = v_session AND turn_id = v_turn;
      SET v_done = v_done + 1;
    END IF;
  END LOOP;
  CLOSE old;
  RETURN v_done;
END //

DELIMITER ;
