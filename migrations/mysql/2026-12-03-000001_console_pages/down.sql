DROP INDEX pipelines_creator_id_idx ON pipelines;
DROP INDEX events_creator_id_idx ON events;
