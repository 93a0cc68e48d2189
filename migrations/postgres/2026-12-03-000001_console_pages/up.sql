-- the console's pages and the API's lists: a user's runs and events, newest first (by id), as an
-- index range instead of a sort of all of them
CREATE INDEX pipelines_creator_id_idx ON pipelines (creator, id);
CREATE INDEX events_creator_id_idx ON events (creator, id);
