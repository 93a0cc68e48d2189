-- The server a tunnel client is connected to now ('' when none): another server reaches the
-- client through that one (GET /api/cluster/relay).
ALTER TABLE machines ADD COLUMN server VARCHAR(64) NOT NULL DEFAULT '';
