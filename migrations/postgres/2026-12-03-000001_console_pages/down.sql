DROP INDEX pipelines_creator_id_idx;
DROP INDEX events_creator_id_idx;
