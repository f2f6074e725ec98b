-- Every distinct label name and value, stored once.
CREATE TABLE symbols (
    id BIGINT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Series: one row per label set; the id is the in-memory series ref. labels: the
-- (name, value) symbol ids as unsigned LEB128 varints, sorted by name.
CREATE TABLE series (
    id BIGINT PRIMARY KEY,
    labels BYTEA NOT NULL
);

-- Chunks of samples. level 0: written by a head flush; level 1: compacted into one
-- block per series and span, with its rollup. data and rollup: see block.rs.
CREATE TABLE chunks (
    series_id BIGINT NOT NULL,
    level BIGINT NOT NULL,
    min_t BIGINT NOT NULL,
    max_t BIGINT NOT NULL,
    samples BIGINT NOT NULL,
    data BYTEA NOT NULL,
    rollup BYTEA
);
CREATE INDEX chunks_by_series ON chunks (series_id, level, max_t);
CREATE INDEX chunks_by_time ON chunks (max_t);
