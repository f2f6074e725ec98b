-- Series: one row per label set; the id is the in-memory series ref.
CREATE TABLE series (
    id BIGINT PRIMARY KEY,
    labels TEXT NOT NULL
);

-- Chunks of samples. level 0: written by a head flush; level 1: compacted into one
-- block per series and span; level 2: rollup of a level-1 block. data: see block.rs.
CREATE TABLE chunks (
    series_id BIGINT NOT NULL,
    level BIGINT NOT NULL,
    min_t BIGINT NOT NULL,
    max_t BIGINT NOT NULL,
    samples BIGINT NOT NULL,
    data BYTEA NOT NULL
);
CREATE INDEX chunks_by_series ON chunks (series_id, level, max_t);
CREATE INDEX chunks_by_time ON chunks (max_t);
