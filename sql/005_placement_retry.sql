-- 005_placement_retry: a fenced write that matched no row, on a session that
-- is 'active' when looked at again, raced with a state change (a move that
-- was aborted, or a frozen session thawed, between the write's UPDATE and
-- this look). That is not "no such session": the caller must retry, as it
-- does for a session being moved. Before this, such a write was answered
-- 404 although the session existed (found by fault scenario 8 killing
-- rebalances at random points).

DELIMITER //

CREATE OR REPLACE FUNCTION chat_placement(p_session BINARY(16)) RETURNS INT
  NOT DETERMINISTIC
  READS SQL DATA
  SQL SECURITY DEFINER
BEGIN
  DECLARE v_state VARCHAR(16) DEFAULT NULL;
  DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_state = NULL;
  SELECT state INTO v_state FROM sessions WHERE session_id = p_session;
  RETURN CASE v_state WHEN 'moving' THEN -1 WHEN 'active' THEN -1 WHEN 'moved' THEN -2 ELSE 0 END;
END //

DELIMITER ;
