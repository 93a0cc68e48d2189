ALTER TABLE pipelines DROP COLUMN lease_epoch;
DROP TABLE run_signals;
DROP TABLE cluster_counters;
DROP TABLE cluster_values;
DROP TABLE servers;
