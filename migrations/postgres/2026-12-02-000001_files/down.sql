ALTER TABLE tasks DROP COLUMN file_sizes;
