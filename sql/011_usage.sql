-- 011_usage: the usage ledger, budgets and holds (docs/architecture.md,
-- "Usage and budgets").
--
-- All three are a user's, on the user's home (sql/009_homes.sql): child rows
-- of the home unit, moved, verified and deleted with it. Every write here
-- takes the home row's lock shared and checks the fence, as a turn's writes
-- take their session's (a move's freeze, which updates the row, waits for
-- them and then stops them).
--
-- A turn holds its worst case (estimated prompt + max_tokens, priced) before
-- the provider is called (chat_usage_hold), and settles the hold to what the
-- answer used once the answer is stored (chat_usage_settle), which adds it
-- to the ledger in the same transaction; a turn with no answer releases it
-- (chat_usage_release). A user or key with a budget row has its holds and
-- settles serialized by the lock on those rows, so the check and the hold
-- are one decision: a budget is never overrun by concurrent turns.

-- Per user (home), day (UTC), key and model; each settle adds to one of 16
-- slots, so the turns of one busy user do not queue on one row's lock. A
-- read sums the slots.
CREATE TABLE IF NOT EXISTS usage_ledger (
  home_id           BINARY(16)   NOT NULL,
  day               DATE         NOT NULL,
  key_id            BINARY(8)    NOT NULL,  -- 8 zero bytes: no key (authentication off)
  model             VARCHAR(128) NOT NULL,
  slot              TINYINT      NOT NULL,
  answers           BIGINT       NOT NULL DEFAULT 0,
  prompt_tokens     BIGINT       NOT NULL DEFAULT 0,
  cached_tokens     BIGINT       NOT NULL DEFAULT 0,
  completion_tokens BIGINT       NOT NULL DEFAULT 0,
  cost_nanos        BIGINT       NOT NULL DEFAULT 0,  -- 1e-9 USD
  PRIMARY KEY (home_id, day, key_id, model, slot)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- A budget of the user (key_id: 8 zero bytes) or of one of its keys. NULL:
-- no limit of that kind.
CREATE TABLE IF NOT EXISTS usage_budgets (
  home_id      BINARY(16)  NOT NULL,
  key_id       BINARY(8)   NOT NULL,
  tokens_day   BIGINT      NULL,
  tokens_month BIGINT      NULL,
  cost_day     BIGINT      NULL,  -- nano-USD
  cost_month   BIGINT      NULL,
  concurrent   BIGINT      NULL,  -- turns holding at once
  updated_at   DATETIME(6) NOT NULL,
  PRIMARY KEY (home_id, key_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row per turn of a user or key with a budget, while it runs. `tokens`
-- and `cost_nanos`: the worst case while 'held', what the answer used once
-- 'settled'. A settled hold is deleted, unless its turn had an
-- Idempotency-Key: then it is kept as long as a retry may come; a released
-- one is kept as long too (a late answer still settles it). A hold
-- whose turn died is found by its expiry and settled or released by
-- whoever looks (the app, on the user's next refusal; chatllm-admin reap).
-- A turn with no budget to answer to holds nothing: its answer is added to
-- the ledger once stored (chat_usage_add).
CREATE TABLE IF NOT EXISTS usage_holds (
  home_id    BINARY(16)  NOT NULL,
  hold_id    BINARY(16)  NOT NULL,  -- from the Idempotency-Key when there is one: a retry holds once
  keyed      TINYINT     NOT NULL,  -- 1: kept after it ends, for the retries of its key
  key_id     BINARY(8)   NOT NULL,
  session_id BINARY(16)  NOT NULL,
  state      ENUM('held', 'settled', 'released') NOT NULL,
  tokens     BIGINT      NOT NULL,
  cost_nanos BIGINT      NOT NULL,
  created_at DATETIME(6) NOT NULL,
  expires_at DATETIME(6) NOT NULL,
  PRIMARY KEY (home_id, hold_id),
  KEY usage_holds_open (home_id, state, expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

DELIMITER //

-- The user's home active here under p_epoch, its row share-locked (1), or
-- its placement code (0 absent, -1 frozen by a move, -2 moved, -3 stale map).
CREATE OR REPLACE FUNCTION chat_usage_place(p_home BINARY(16), p_user BINARY(16), p_epoch BIGINT) RETURNS INT
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
   WHERE session_id = p_home AND kind = 'home' AND user_id <=> p_user LOCK IN SHARE MODE;
  RETURN CASE v_state WHEN 'active' THEN 1 WHEN 'moving' THEN -1 WHEN 'moved' THEN -2 ELSE 0 END;
END //

-- 0 when p_tokens and p_cost (-1: the model has no price) fit every budget
-- of the user and of key p_key, counting what the ledger holds for today
-- and this month (UTC) and every open hold; else which budget refuses:
-- -11 tokens a day, -12 tokens a month, -13 cost a day, -14 cost a month,
-- -15 concurrent turns, -16 a cost budget and no price (the user's), and
-- -21..-26 the same for the key's. The caller holds the budget rows' locks.
-- When they fit, @chat_usage_room says what room the tightest budget of
-- each kind leaves once they are held: 't LIMIT REMAINING d|m' (tokens, a
-- day or a month), 'c ...' (cost, nano-USD), 'n LIMIT REMAINING' (turns at
-- once), joined by ';' ('' when no budget limits them).
CREATE OR REPLACE FUNCTION chat_usage_check(p_home BINARY(16), p_key BINARY(8), p_tokens BIGINT, p_cost BIGINT)
  RETURNS INT
  NOT DETERMINISTIC
  READS SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_done INT DEFAULT 0;
  DECLARE v_key BINARY(8);
  DECLARE v_base INT;
  DECLARE v_tokens_day, v_tokens_month, v_cost_day, v_cost_month, v_concurrent BIGINT;
  DECLARE v_used_tokens_day, v_used_tokens_month, v_used_cost_day, v_used_cost_month BIGINT;
  DECLARE v_held_tokens, v_held_cost, v_held_count BIGINT;
  -- The tightest budget of each kind: its limit, what it leaves, its period.
  DECLARE v_t_limit, v_t_left, v_c_limit, v_c_left, v_n_limit, v_n_left BIGINT DEFAULT NULL;
  DECLARE v_t_month, v_c_month INT DEFAULT 0;
  DECLARE c CURSOR FOR
    SELECT key_id, tokens_day, tokens_month, cost_day, cost_month, concurrent FROM usage_budgets
     WHERE home_id = p_home AND key_id IN (REPEAT(0x00, 8), p_key);
  DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_done = 1;
  OPEN c;
  budgets: LOOP
    FETCH c INTO v_key, v_tokens_day, v_tokens_month, v_cost_day, v_cost_month, v_concurrent;
    IF v_done THEN
      LEAVE budgets;
    END IF;
    SET v_base = IF(v_key = REPEAT(0x00, 8), -10, -20);
    -- One statement, one read view: what is settled and what is held.
    SELECT COALESCE(SUM(IF(l.day = UTC_DATE(), l.prompt_tokens + l.completion_tokens, 0)), 0),
           COALESCE(SUM(l.prompt_tokens + l.completion_tokens), 0),
           COALESCE(SUM(IF(l.day = UTC_DATE(), l.cost_nanos, 0)), 0),
           COALESCE(SUM(l.cost_nanos), 0),
           (SELECT COALESCE(SUM(h.tokens), 0) FROM usage_holds h
             WHERE h.home_id = p_home AND h.state = 'held' AND (v_base = -10 OR h.key_id = v_key)),
           (SELECT COALESCE(SUM(h.cost_nanos), 0) FROM usage_holds h
             WHERE h.home_id = p_home AND h.state = 'held' AND (v_base = -10 OR h.key_id = v_key)),
           (SELECT COUNT(*) FROM usage_holds h
             WHERE h.home_id = p_home AND h.state = 'held' AND (v_base = -10 OR h.key_id = v_key))
      INTO v_used_tokens_day, v_used_tokens_month, v_used_cost_day, v_used_cost_month,
           v_held_tokens, v_held_cost, v_held_count
      FROM usage_ledger l
     WHERE l.home_id = p_home AND l.day >= DATE_FORMAT(UTC_DATE(), '%Y-%m-01') AND l.day <= UTC_DATE()
       AND (v_base = -10 OR l.key_id = v_key);
    IF v_concurrent IS NOT NULL AND v_held_count + 1 > v_concurrent THEN
      RETURN v_base - 5;
    END IF;
    IF v_tokens_day IS NOT NULL AND v_used_tokens_day + v_held_tokens + p_tokens > v_tokens_day THEN
      RETURN v_base - 1;
    END IF;
    IF v_tokens_month IS NOT NULL AND v_used_tokens_month + v_held_tokens + p_tokens > v_tokens_month THEN
      RETURN v_base - 2;
    END IF;
    IF (v_cost_day IS NOT NULL OR v_cost_month IS NOT NULL) AND p_cost < 0 THEN
      RETURN v_base - 6;
    END IF;
    IF v_cost_day IS NOT NULL AND v_used_cost_day + v_held_cost + p_cost > v_cost_day THEN
      RETURN v_base - 3;
    END IF;
    IF v_cost_month IS NOT NULL AND v_used_cost_month + v_held_cost + p_cost > v_cost_month THEN
      RETURN v_base - 4;
    END IF;
    IF v_tokens_day IS NOT NULL AND (v_t_left IS NULL OR
                                     v_tokens_day - v_used_tokens_day - v_held_tokens - p_tokens < v_t_left) THEN
      SET v_t_limit = v_tokens_day, v_t_left = v_tokens_day - v_used_tokens_day - v_held_tokens - p_tokens,
          v_t_month = 0;
    END IF;
    IF v_tokens_month IS NOT NULL AND (v_t_left IS NULL OR
                                       v_tokens_month - v_used_tokens_month - v_held_tokens - p_tokens < v_t_left) THEN
      SET v_t_limit = v_tokens_month, v_t_left = v_tokens_month - v_used_tokens_month - v_held_tokens - p_tokens,
          v_t_month = 1;
    END IF;
    IF v_cost_day IS NOT NULL AND (v_c_left IS NULL OR
                                   v_cost_day - v_used_cost_day - v_held_cost - p_cost < v_c_left) THEN
      SET v_c_limit = v_cost_day, v_c_left = v_cost_day - v_used_cost_day - v_held_cost - p_cost, v_c_month = 0;
    END IF;
    IF v_cost_month IS NOT NULL AND (v_c_left IS NULL OR
                                     v_cost_month - v_used_cost_month - v_held_cost - p_cost < v_c_left) THEN
      SET v_c_limit = v_cost_month, v_c_left = v_cost_month - v_used_cost_month - v_held_cost - p_cost,
          v_c_month = 1;
    END IF;
    IF v_concurrent IS NOT NULL AND (v_n_left IS NULL OR v_concurrent - v_held_count - 1 < v_n_left) THEN
      SET v_n_limit = v_concurrent, v_n_left = v_concurrent - v_held_count - 1;
    END IF;
  END LOOP;
  CLOSE c;
  SET @chat_usage_room = CONCAT_WS(';',
    IF(v_t_limit IS NULL, NULL, CONCAT('t ', v_t_limit, ' ', v_t_left, IF(v_t_month, ' m', ' d'))),
    IF(v_c_limit IS NULL, NULL, CONCAT('c ', v_c_limit, ' ', v_c_left, IF(v_c_month, ' m', ' d'))),
    IF(v_n_limit IS NULL, NULL, CONCAT('n ', v_n_limit, ' ', v_n_left)));
  RETURN 0;
END //

-- Holds p_tokens / p_cost for a turn until it settles, for at most
-- p_lease_ms, when a budget of the user or of key p_key applies. Returns 1
-- (held), 2 (already held under this id: another attempt of the same
-- Idempotency-Key runs it), 3 (already settled: that attempt answered), 4
-- (no budget applies: nothing held, nothing written), a refusal of
-- chat_usage_check (nothing held), or a placement code, as text; after 1,
-- a space and the room the budgets leave (chat_usage_check's
-- @chat_usage_room) when any limits it. A released hold (its attempt
-- failed) is held again.
CREATE OR REPLACE FUNCTION chat_usage_hold(
  p_home     BINARY(16),
  p_user     BINARY(16),
  p_hold     BINARY(16),
  p_keyed    INT,
  p_key      BINARY(8),
  p_session  BINARY(16),
  p_tokens   BIGINT,
  p_cost     BIGINT,
  p_lease_ms BIGINT,
  p_keep_s   BIGINT,
  p_epoch    BIGINT
) RETURNS VARCHAR(255) CHARACTER SET ascii
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_code INT;
  DECLARE v_budgets INT;
  DECLARE v_state VARCHAR(16) DEFAULT NULL;
  DECLARE v_created DATETIME(6);
  DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_state = NULL;
  SET v_code = chat_usage_place(p_home, p_user, p_epoch);
  IF v_code <> 1 THEN
    RETURN v_code;
  END IF;
  -- The budget rows first, locked: this user's (and key's) holds and
  -- settles queue here, so the check below and the hold are one decision.
  SELECT COUNT(*) INTO v_budgets FROM usage_budgets
   WHERE home_id = p_home AND key_id IN (REPEAT(0x00, 8), p_key) FOR UPDATE;
  SELECT state, created_at INTO v_state, v_created FROM usage_holds
   WHERE home_id = p_home AND hold_id = p_hold FOR UPDATE;
  IF v_state = 'held' THEN
    -- Another attempt of the key holds it (or did, and died): this one
    -- runs under it (within its lease, which covers any turn).
    RETURN 2;
  END IF;
  -- Settled while its key can still be replayed (the key lives p_keep_s
  -- from its completion, which came just before the settle): the retry
  -- replays.
  IF v_state = 'settled' AND v_created >= UTC_TIMESTAMP(6) - INTERVAL p_keep_s SECOND THEN
    RETURN 3;
  END IF;
  IF v_budgets = 0 THEN
    RETURN 4;
  END IF;
  SET @chat_usage_room = '';
  SET v_code = chat_usage_check(p_home, p_key, p_tokens, p_cost);
  IF v_code <> 0 THEN
    RETURN v_code;
  END IF;
  IF v_state IS NULL THEN
    INSERT INTO usage_holds (home_id, hold_id, keyed, key_id, session_id, state, tokens, cost_nanos, created_at,
                             expires_at)
    VALUES (p_home, p_hold, p_keyed, p_key, p_session, 'held', p_tokens, GREATEST(p_cost, 0), UTC_TIMESTAMP(6),
            UTC_TIMESTAMP(6) + INTERVAL p_lease_ms * 1000 MICROSECOND);
  ELSE
    UPDATE usage_holds SET state = 'held', key_id = p_key, session_id = p_session, tokens = p_tokens,
                           cost_nanos = GREATEST(p_cost, 0), created_at = UTC_TIMESTAMP(6),
                           expires_at = UTC_TIMESTAMP(6) + INTERVAL p_lease_ms * 1000 MICROSECOND
     WHERE home_id = p_home AND hold_id = p_hold;
  END IF;
  -- Finished holds are kept as long as a retry of their key may come
  -- (p_keep_s), then forgotten, a few at a time.
  DELETE FROM usage_holds
   WHERE home_id = p_home AND state IN ('settled', 'released')
     AND expires_at < UTC_TIMESTAMP(6) - INTERVAL p_keep_s SECOND
   LIMIT 8;
  RETURN IF(COALESCE(@chat_usage_room, '') = '', '1', CONCAT('1 ', @chat_usage_room));
END //

-- The answer of hold p_hold is stored: the hold becomes what it used, and
-- the ledger counts it, in one transaction. 1, or 2 when it was settled
-- already (by the reaper, or an earlier call), or a placement code. A hold
-- released meanwhile (its lease ran out and nobody found the answer yet) is
-- settled all the same: the answer exists, so it is counted.
CREATE OR REPLACE FUNCTION chat_usage_settle(
  p_home       BINARY(16),
  p_user       BINARY(16),
  p_hold       BINARY(16),
  p_model      VARCHAR(128),
  p_slot       INT,
  p_prompt     BIGINT,
  p_cached     BIGINT,
  p_completion BIGINT,
  p_cost       BIGINT,
  p_epoch      BIGINT
) RETURNS INT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_code INT;
  DECLARE v_budgets INT;
  DECLARE v_key BINARY(8) DEFAULT NULL;
  DECLARE v_keyed INT DEFAULT 0;
  DECLARE v_state VARCHAR(16) DEFAULT NULL;
  DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_state = NULL;
  SET v_code = chat_usage_place(p_home, p_user, p_epoch);
  IF v_code <> 1 THEN
    RETURN v_code;
  END IF;
  SELECT key_id, keyed INTO v_key, v_keyed FROM usage_holds WHERE home_id = p_home AND hold_id = p_hold;
  IF v_key IS NULL THEN
    RETURN 2;
  END IF;
  -- Queued with the holds of the same budgets (chat_usage_hold).
  SELECT COUNT(*) INTO v_budgets FROM usage_budgets
   WHERE home_id = p_home AND key_id IN (REPEAT(0x00, 8), v_key) FOR UPDATE;
  SELECT state INTO v_state FROM usage_holds WHERE home_id = p_home AND hold_id = p_hold FOR UPDATE;
  IF v_state IS NULL OR v_state = 'settled' THEN
    RETURN 2;
  END IF;
  IF v_keyed THEN
    -- created_at becomes the settle's time: the window in which a retry of
    -- the key replays (chat_usage_hold) starts here.
    UPDATE usage_holds SET state = 'settled', tokens = GREATEST(p_prompt, 0) + GREATEST(p_completion, 0),
                           cost_nanos = GREATEST(p_cost, 0), created_at = UTC_TIMESTAMP(6)
     WHERE home_id = p_home AND hold_id = p_hold;
  ELSE
    DELETE FROM usage_holds WHERE home_id = p_home AND hold_id = p_hold;
  END IF;
  INSERT INTO usage_ledger (home_id, day, key_id, model, slot, answers, prompt_tokens, cached_tokens,
                            completion_tokens, cost_nanos)
  VALUES (p_home, UTC_DATE(), v_key, LEFT(p_model, 128), p_slot, 1, GREATEST(p_prompt, 0), GREATEST(p_cached, 0),
          GREATEST(p_completion, 0), GREATEST(p_cost, 0))
  ON DUPLICATE KEY UPDATE answers = answers + 1, prompt_tokens = prompt_tokens + VALUES(prompt_tokens),
                          cached_tokens = cached_tokens + VALUES(cached_tokens),
                          completion_tokens = completion_tokens + VALUES(completion_tokens),
                          cost_nanos = cost_nanos + VALUES(cost_nanos);
  RETURN 1;
END //

-- The turn of hold p_hold stored no answer: what it held is free again.
-- 1 released, 4 not held (settled, released, or unknown), or a placement code.
CREATE OR REPLACE FUNCTION chat_usage_release(p_home BINARY(16), p_user BINARY(16), p_hold BINARY(16),
                                              p_epoch BIGINT) RETURNS INT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_code INT;
  SET v_code = chat_usage_place(p_home, p_user, p_epoch);
  IF v_code <> 1 THEN
    RETURN v_code;
  END IF;
  -- Kept as 'released' (chat_usage_hold forgets it later): an answer stored
  -- after all still settles, and is counted.
  UPDATE usage_holds SET state = 'released' WHERE home_id = p_home AND hold_id = p_hold AND state = 'held';
  RETURN IF(ROW_COUNT() = 1, 1, 4);
END //

-- The answer of a turn that held nothing (no budget applied) is stored:
-- the ledger counts it. 1, or a placement code.
CREATE OR REPLACE FUNCTION chat_usage_add(
  p_home       BINARY(16),
  p_user       BINARY(16),
  p_key        BINARY(8),
  p_model      VARCHAR(128),
  p_slot       INT,
  p_prompt     BIGINT,
  p_cached     BIGINT,
  p_completion BIGINT,
  p_cost       BIGINT,
  p_epoch      BIGINT
) RETURNS INT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_code INT;
  SET v_code = chat_usage_place(p_home, p_user, p_epoch);
  IF v_code <> 1 THEN
    RETURN v_code;
  END IF;
  INSERT INTO usage_ledger (home_id, day, key_id, model, slot, answers, prompt_tokens, cached_tokens,
                            completion_tokens, cost_nanos)
  VALUES (p_home, UTC_DATE(), p_key, LEFT(p_model, 128), p_slot, 1, GREATEST(p_prompt, 0), GREATEST(p_cached, 0),
          GREATEST(p_completion, 0), GREATEST(p_cost, 0))
  ON DUPLICATE KEY UPDATE answers = answers + 1, prompt_tokens = prompt_tokens + VALUES(prompt_tokens),
                          cached_tokens = cached_tokens + VALUES(cached_tokens),
                          completion_tokens = completion_tokens + VALUES(completion_tokens),
                          cost_nanos = cost_nanos + VALUES(cost_nanos);
  RETURN 1;
END //

-- Sets (or, with every limit NULL, removes) a budget of the user (p_key:
-- 8 zero bytes) or of one of its keys. 1, or a placement code.
CREATE OR REPLACE FUNCTION chat_usage_budget(
  p_home         BINARY(16),
  p_user         BINARY(16),
  p_key          BINARY(8),
  p_tokens_day   BIGINT,
  p_tokens_month BIGINT,
  p_cost_day     BIGINT,
  p_cost_month   BIGINT,
  p_concurrent   BIGINT,
  p_epoch        BIGINT
) RETURNS INT
  NOT DETERMINISTIC
  MODIFIES SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_code INT;
  SET v_code = chat_usage_place(p_home, p_user, p_epoch);
  IF v_code <> 1 THEN
    RETURN v_code;
  END IF;
  IF p_tokens_day IS NULL AND p_tokens_month IS NULL AND p_cost_day IS NULL AND p_cost_month IS NULL
     AND p_concurrent IS NULL THEN
    DELETE FROM usage_budgets WHERE home_id = p_home AND key_id = p_key;
  ELSE
    INSERT INTO usage_budgets (home_id, key_id, tokens_day, tokens_month, cost_day, cost_month, concurrent, updated_at)
    VALUES (p_home, p_key, p_tokens_day, p_tokens_month, p_cost_day, p_cost_month, p_concurrent, UTC_TIMESTAMP(6))
    ON DUPLICATE KEY UPDATE tokens_day = VALUES(tokens_day), tokens_month = VALUES(tokens_month),
                            cost_day = VALUES(cost_day), cost_month = VALUES(cost_month),
                            concurrent = VALUES(concurrent), updated_at = VALUES(updated_at);
  END IF;
  RETURN 1;
END //

DELIMITER ;
