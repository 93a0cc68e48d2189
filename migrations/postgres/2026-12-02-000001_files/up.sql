-- File outputs of a task: {name: size in bytes} (the values, object keys, are in outputs).
ALTER TABLE tasks ADD COLUMN file_sizes TEXT;
