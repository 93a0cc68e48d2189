ALTER TABLE machines DROP COLUMN server;
