-- Login tokens carry their user's generation; raising it (logout --all, a password change)
-- revokes every token issued before.
ALTER TABLE users ADD COLUMN token_generation BIGINT NOT NULL DEFAULT 0;
